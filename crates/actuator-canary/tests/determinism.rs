//! Bucketing is identical across processes: the test binary re-executes itself and compares.

use std::process::Command;

use actuator_canary::{arm_bucket, bucket};

const CHILD_ENV: &str = "ACTUATOR_CANARY_PRINT_BUCKETS";

fn lines() -> Vec<String> {
    (0..1_000)
        .map(|i| {
            let key = format!("user-{i}");
            let salt = format!("rollout-{}", i % 7);
            format!(
                "BUCKET {key} {} {}",
                bucket("llm.chat", &salt, &key),
                arm_bucket("llm.chat", &salt, &key)
            )
        })
        .collect()
}

/// In the child process (env var set), prints the buckets; otherwise does nothing.
#[test]
fn child_prints_buckets() {
    if std::env::var_os(CHILD_ENV).is_some() {
        for l in lines() {
            println!("{l}");
        }
    }
}

#[test]
fn buckets_are_identical_in_another_process() {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["child_prints_buckets", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "child failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    // libtest may print "test child_prints_buckets ... " on the first line: cut before the tag.
    let child: Vec<&str> =
        stdout.lines().filter_map(|l| l.find("BUCKET ").map(|i| &l[i..])).collect();
    let parent = lines();
    assert_eq!(child.len(), parent.len(), "child printed {} bucket lines", child.len());
    for (c, p) in child.iter().zip(&parent) {
        assert_eq!(c, p);
    }
}

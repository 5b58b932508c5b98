//! The dashboard's browser test and the README's screenshot: Debian's Chromium and
//! chromedriver (installed with apt-get when missing) drive the `browser` test of
//! `actuator-tests`, which starts a real daemon with a canary under simulated traffic.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::{cargo, is_ci, root, run};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Installs `chromium` and `chromium-driver` with apt-get when either is missing.
///
/// # Errors
/// When they are missing and cannot be installed.
pub(crate) fn ensure_chromium() -> anyhow::Result<()> {
    let present = || Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    if present() {
        return Ok(());
    }
    let install = || {
        Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "chromium",
                "chromium-driver",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    eprintln!("installing chromium and chromium-driver for the dashboard's browser test");
    if !install().is_ok_and(|s| s.success()) {
        let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        let _ = install();
    }
    if !present() {
        bail!("{CHROMIUM} and {CHROMEDRIVER} are missing and apt-get could not install them");
    }
    Ok(())
}

/// Runs the browser test (the binary must be built). With `screenshot`, the test also writes
/// the rollout page's picture there.
///
/// # Errors
/// When the test fails.
pub(crate) fn test(screenshot: Option<&Path>) -> anyhow::Result<()> {
    let mut t = cargo();
    t.args(["test", "-p", "actuator-tests", "--test", "browser", "--", "--ignored"]);
    if let Some(p) = screenshot {
        t.env("ACTUATOR_SCREENSHOT", p);
    }
    run(t)
}

/// The browser step of `cargo xtask test`: under CI a missing browser fails the run,
/// elsewhere it is skipped with a warning.
///
/// # Errors
/// When the test fails, or under CI when the browser cannot be installed.
pub(crate) fn test_step() -> anyhow::Result<()> {
    match ensure_chromium() {
        Ok(()) => test(None),
        Err(e) if is_ci() => Err(e),
        Err(e) => {
            eprintln!("warning: {e:#}; the dashboard's browser test is skipped");
            Ok(())
        }
    }
}

/// `cargo xtask screenshot`: regenerates `docs/images/rollout-page.png`.
///
/// # Errors
/// When the browser is missing or the test fails.
pub(crate) fn screenshot() -> anyhow::Result<()> {
    let mut build = cargo();
    build.args(["build", "-p", "actuator", "--bin", "actuator"]);
    run(build)?;
    ensure_chromium()?;
    let dir = root().join("docs/images");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("rollout-page.png");
    test(Some(&path))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

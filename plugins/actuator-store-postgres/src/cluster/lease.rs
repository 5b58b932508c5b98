//! The election: a session advisory lock on a dedicated connection, and a lease row whose
//! epoch is the leader's fencing token.

use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actuator_core::store::StoreError;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, Row};
use tokio::sync::watch;

use super::fence::{Fence, FenceState};
use super::replicas::{self, ReplicaRow};
use crate::rows::{Cols, backend, fmt_ts};
use crate::store::{PostgresStore, WRITE_LOCK_KEY, now};

/// The key of the session advisory lock the leader holds on its lease connection.
pub const LEADER_KEY: i64 = 0x6163_745f_6c65_6164; // "act_lead"

/// The accepted lease lengths, in milliseconds.
pub const LEASE_MS_RANGE: RangeInclusive<u64> = 1_000..=60_000;

/// How many times an election tries to take the write lock from a stuck holder.
const TAKE_WRITE_LOCK_TRIES: u32 = 3;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a replica is told to be in the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterOptions {
    /// This replica's id: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
    pub replica_id: String,
    /// How the other replicas reach this one (`http://host:port`).
    pub url: String,
    /// The lease: a leader not renewed for this long is taken over. In [`LEASE_MS_RANGE`].
    pub lease: Duration,
}

impl ClusterOptions {
    /// Checks the id and the lease, naming the field that is wrong.
    pub fn validate(&self) -> Result<(), StoreError> {
        let id = &self.replica_id;
        let id_ok = (1..=64).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !id_ok {
            return Err(StoreError::Invalid(format!(
                "cluster.replica_id: {id:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"
            )));
        }
        let ms = u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX);
        if !LEASE_MS_RANGE.contains(&ms) {
            return Err(StoreError::Invalid(format!(
                "cluster.lease_ms: {ms} is out of range {}..={}",
                LEASE_MS_RANGE.start(),
                LEASE_MS_RANGE.end()
            )));
        }
        Ok(())
    }

    fn poll(&self) -> Duration {
        self.lease / 5
    }

    fn renew_every(&self) -> Duration {
        self.lease / 3
    }
}

/// What this replica is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// It does not lead.
    Follower,
    /// It leads with this epoch (its fencing token).
    Leader {
        /// The epoch.
        epoch: u64,
    },
}

impl Role {
    /// The epoch it leads with, if it leads.
    pub fn epoch(self) -> Option<u64> {
        match self {
            Self::Leader { epoch } => Some(epoch),
            Self::Follower => None,
        }
    }

    /// `leader` or `follower`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Leader { .. } => "leader",
            Self::Follower => "follower",
        }
    }
}

/// The lease row as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    /// The epoch of the last election (0 before the first).
    pub epoch: u64,
    /// The leader's replica id, `None` before the first election.
    pub holder: Option<String>,
    /// The leader's URL.
    pub url: Option<String>,
    /// When the leader was elected, RFC 3339.
    pub since: Option<String>,
    /// When the leader last renewed, RFC 3339 (the database's clock).
    pub renewed_at: Option<String>,
    /// Whether the lease was not renewed for longer than the reader's lease length.
    pub expired: bool,
}

fn lease_row(row: &PgRow) -> Result<LeaseRow, StoreError> {
    let c = Cols::new(row, "cluster_lease");
    Ok(LeaseRow {
        epoch: c.u64("epoch")?,
        holder: c.opt_text("holder")?,
        url: c.opt_text("url")?,
        since: c.opt_text("since")?,
        renewed_at: c.opt_text("renewed")?,
        expired: row.try_get("expired").map_err(backend("reading the lease"))?,
    })
}

/// Reads the lease row; `expired` against `lease`.
async fn read_lease<'e>(
    conn: impl sqlx::PgExecutor<'e>,
    lease: Duration,
) -> Result<LeaseRow, StoreError> {
    let row = sqlx::query(
        "SELECT epoch, holder, url, since, \
         to_char(renewed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS renewed, \
         COALESCE(renewed_at < now() - make_interval(secs => $1), FALSE) AS expired \
         FROM cluster_lease WHERE id = 1",
    )
    .bind(lease.as_secs_f64())
    .fetch_one(conn)
    .await
    .map_err(backend("reading the lease"))?;
    lease_row(&row)
}

struct Inner {
    /// Unfenced: the node's own bookkeeping (the replica rows) and reads.
    store: PostgresStore,
    options: ClusterOptions,
    fence: Fence,
    role: watch::Sender<Role>,
    /// The lease as last read (or as written by this replica's election).
    leader: Mutex<Option<LeaseRow>>,
    started_at: DateTime<Utc>,
    last_sync: Mutex<Option<DateTime<Utc>>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// One replica's part in the election. Cheap to clone (shared).
#[derive(Clone)]
pub struct ClusterNode {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("options", &self.inner.options)
            .field("role", &self.role())
            .finish_non_exhaustive()
    }
}

impl ClusterNode {
    /// Joins the cluster on `store`'s database and starts the election task, which sets
    /// `fence` when elected and clears it when stepping down (fence a store with the same
    /// [`Fence`], or take [`ClusterNode::fenced_store`]). The node follows until it wins an
    /// election.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] when the options are not valid.
    pub fn start(
        store: &PostgresStore,
        options: ClusterOptions,
        fence: Fence,
    ) -> Result<Self, StoreError> {
        options.validate()?;
        let node = Self {
            inner: Arc::new(Inner {
                store: store.unfenced(),
                options,
                fence,
                role: watch::Sender::new(Role::Follower),
                leader: Mutex::new(None),
                started_at: now(),
                last_sync: Mutex::new(None),
                stop: watch::Sender::new(false),
                task: Mutex::new(None),
            }),
        };
        let me = node.clone();
        let task = tokio::spawn(async move { me.run().await });
        *lock(&node.inner.task) = Some(task);
        Ok(node)
    }

    /// The options.
    pub fn options(&self) -> &ClusterOptions {
        &self.inner.options
    }

    /// The fencing token this node sets when elected and clears when it steps down.
    pub fn fence(&self) -> &Fence {
        &self.inner.fence
    }

    /// The store with every write conditional on this node's fencing token.
    pub fn fenced_store(&self) -> PostgresStore {
        self.inner.store.with_fence(self.inner.fence.clone())
    }

    /// What this replica is now.
    pub fn role(&self) -> Role {
        *self.inner.role.borrow()
    }

    /// Watches the role.
    pub fn subscribe_role(&self) -> watch::Receiver<Role> {
        self.inner.role.subscribe()
    }

    /// The lease as last read by the election (every lease/5 on a follower), `None` before
    /// the first read.
    pub fn last_lease(&self) -> Option<LeaseRow> {
        lock(&self.inner.leader).clone()
    }

    /// The URL of the leader as last read, when another replica leads and its lease is
    /// current.
    pub fn leader_url(&self) -> Option<String> {
        if self.role().epoch().is_some() {
            return Some(self.inner.options.url.clone());
        }
        lock(&self.inner.leader)
            .as_ref()
            .filter(|l| !l.expired && l.holder.as_deref() != Some(&self.inner.options.replica_id))
            .and_then(|l| l.url.clone())
    }

    /// Records that the routing table just resynchronised fully or applied a change.
    pub fn mark_synced(&self) {
        *lock(&self.inner.last_sync) = Some(now());
    }

    /// When the routing table last synchronised.
    pub fn last_sync(&self) -> Option<DateTime<Utc>> {
        *lock(&self.inner.last_sync)
    }

    /// Reads the lease from the database.
    ///
    /// # Errors
    /// The store's error when the database cannot be read.
    pub async fn read_lease(&self) -> Result<LeaseRow, StoreError> {
        read_lease(self.inner.store.reader(), self.inner.options.lease).await
    }

    /// Reads the replicas' rows from the database.
    ///
    /// # Errors
    /// The store's error when the database cannot be read.
    pub async fn replicas(&self) -> Result<Vec<ReplicaRow>, StoreError> {
        replicas::list(self.inner.store.reader()).await
    }

    /// Stops the election: a leader steps down and lets go of its lock (another replica
    /// leads within one poll), and the replica's row is removed.
    pub async fn stop(&self) {
        self.inner.stop.send_replace(true);
        let task = lock(&self.inner.task).take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }

    fn my_row(&self) -> ReplicaRow {
        let at = now();
        ReplicaRow {
            id: self.inner.options.replica_id.clone(),
            url: self.inner.options.url.clone(),
            role: self.role().as_str().to_owned(),
            started_at: fmt_ts(self.inner.started_at),
            last_seen: fmt_ts(at),
            last_sync: self.last_sync().map(fmt_ts),
        }
    }

    /// Clears the fence (first: no write commits after this), then tells the role's
    /// watchers and the log.
    fn step_down(&self, why: &str, current: Option<u64>) {
        let held = self.inner.fence.clear();
        let was = self.inner.role.send_replace(Role::Follower).epoch();
        if let Some(old) = held.or(was) {
            tracing::warn!(
                replica = %self.inner.options.replica_id,
                old_epoch = old,
                current_epoch = ?current,
                reason = why,
                "stepping down: this replica no longer leads (old epoch {old}, current epoch {})",
                current.map_or_else(|| "unknown".to_owned(), |c| c.to_string())
            );
        }
    }

    async fn run(&self) {
        let o = &self.inner.options;
        let mut stop = self.inner.stop.subscribe();
        let mut fence = self.inner.fence.subscribe();
        let mut conn: Option<PgConnection> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            let wait = match self.role() {
                Role::Leader { epoch } => {
                    match self.renew(&mut conn, epoch).await {
                        Ok(()) => {}
                        Err(why) => {
                            // The lock goes with the connection.
                            conn = None;
                            let current = self.current_epoch().await;
                            self.step_down(&why, current);
                        }
                    }
                    o.renew_every()
                }
                Role::Follower => {
                    if let Err(e) = self.follow(&mut conn).await {
                        tracing::debug!(error = %e, "cluster: election poll failed; retrying");
                        conn = None;
                    }
                    o.poll()
                }
            };
            self.bookkeeping().await;
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
                changed = fence.changed() => {
                    let state = *fence.borrow_and_update();
                    if changed.is_ok()
                        && let FenceState::Deposed { current, .. } = state
                    {
                        conn = None;
                        self.step_down("a write found the lease taken over", Some(current));
                    }
                }
            }
        }
        if self.role().epoch().is_some() {
            self.step_down("the daemon stops", None);
        }
        if let Some(c) = conn.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), c.close()).await;
        }
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            replicas::remove(self.inner.store.reader(), &o.replica_id),
        )
        .await;
    }

    /// The epoch in the database, if it answers quickly.
    async fn current_epoch(&self) -> Option<u64> {
        tokio::time::timeout(Duration::from_secs(1), self.read_lease())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|l| l.epoch)
    }

    /// Records this replica's row; the leader also forgets replicas not seen for long.
    async fn bookkeeping(&self) {
        let pool = self.inner.store.reader();
        let limit = self.inner.options.poll().max(Duration::from_millis(500));
        let row = self.my_row();
        let done = tokio::time::timeout(limit, async {
            replicas::upsert(pool, &row).await?;
            if self.role().epoch().is_some()
                && let Some(before) = now().checked_sub_signed(replicas::forget_after())
            {
                replicas::forget_before(pool, before).await?;
            }
            Ok::<_, StoreError>(())
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "cluster: recording this replica failed"),
            Err(_) => tracing::debug!("cluster: recording this replica timed out"),
        }
    }

    /// The leader's renewal, bounded by lease/3: `Err` with the reason when it must stop.
    async fn renew(&self, conn: &mut Option<PgConnection>, epoch: u64) -> Result<(), String> {
        let Some(c) = conn.as_mut() else {
            return Err("the lease connection is gone".into());
        };
        let limit = self.inner.options.renew_every();
        let epoch_i64 = i64::try_from(epoch).map_err(|_| "the epoch is out of range".to_owned())?;
        let renewed = tokio::time::timeout(
            limit,
            sqlx::query(
                "UPDATE cluster_lease SET renewed_at = now() \
                 WHERE id = 1 AND epoch = $1 AND backend_pid = pg_backend_pid()",
            )
            .bind(epoch_i64)
            .execute(&mut *c),
        )
        .await;
        match renewed {
            Ok(Ok(done)) if done.rows_affected() == 1 => Ok(()),
            Ok(Ok(_)) => Err("the lease carries another epoch".into()),
            Ok(Err(e)) => Err(format!("renewing the lease failed: {e}")),
            Err(_) => Err(format!("renewing the lease took longer than {} ms", limit.as_millis())),
        }
    }

    /// One poll of a follower: connects, tries the leader's lock (and is elected when it
    /// gets it), else reads the lease and takes over one that expired.
    async fn follow(&self, conn: &mut Option<PgConnection>) -> Result<(), StoreError> {
        let o = &self.inner.options;
        let limit = o.lease.max(Duration::from_secs(1));
        if conn.is_none() {
            let c =
                tokio::time::timeout(limit, PgConnection::connect_with(self.inner.store.options()))
                    .await
                    .map_err(|_| {
                        StoreError::Unavailable(
                            "postgres: opening the lease connection timed out".into(),
                        )
                    })?
                    .map_err(backend("opening the lease connection"))?;
            *conn = Some(c);
        }
        let Some(c) = conn.as_mut() else { return Ok(()) };
        let step = async {
            for attempt in 0..10 {
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(LEADER_KEY)
                    .fetch_one(&mut *c)
                    .await
                    .map_err(backend("trying the leader's lock"))?;
                if got {
                    return self.elect(&mut *c).await.map(Some);
                }
                let lease = read_lease(&mut *c, o.lease).await?;
                *lock(&self.inner.leader) = Some(lease.clone());
                if !lease.expired {
                    return Ok(None);
                }
                if attempt == 0 {
                    tracing::warn!(
                        replica = %o.replica_id,
                        leader = ?lease.holder,
                        epoch = lease.epoch,
                        renewed_at = ?lease.renewed_at,
                        "the leader's lease expired: ending its lease connection to take over"
                    );
                    terminate_lock_holders(&mut *c, LEADER_KEY).await?;
                }
                // The lock is let go when the ended backend exits.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(None)
        };
        match tokio::time::timeout(limit, step).await {
            Ok(Ok(Some(epoch))) => {
                self.inner.fence.lead(epoch);
                self.inner.role.send_replace(Role::Leader { epoch });
                tracing::info!(replica = %o.replica_id, epoch, "elected leader");
                Ok(())
            }
            Ok(Ok(None)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::Unavailable("postgres: an election poll timed out".into())),
        }
    }

    /// With the leader's lock held: bumps the epoch holding the write lock (ending a
    /// backend that holds it for longer than a poll: a deposed leader's transaction), and
    /// records this replica as the holder. Returns the new epoch.
    async fn elect(&self, c: &mut PgConnection) -> Result<u64, StoreError> {
        let o = &self.inner.options;
        let wait_ms = u64::try_from(o.poll().as_millis()).unwrap_or(1000).max(100);
        let mut tries = 0;
        loop {
            tries += 1;
            let mut tx = c.begin().await.map_err(backend("beginning an election"))?;
            sqlx::query(sqlx::AssertSqlSafe(format!("SET LOCAL lock_timeout = {wait_ms}")))
                .execute(&mut *tx)
                .await
                .map_err(backend("bounding the election's wait"))?;
            let locked = sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(WRITE_LOCK_KEY)
                .execute(&mut *tx)
                .await;
            match locked {
                Ok(_) => {}
                Err(sqlx::Error::Database(d))
                    if d.code().as_deref() == Some("55P03") && tries < TAKE_WRITE_LOCK_TRIES =>
                {
                    drop(tx.rollback().await);
                    tracing::warn!(
                        replica = %o.replica_id,
                        "a write held the write lock through an election: ending its backend"
                    );
                    terminate_lock_holders(&mut *c, WRITE_LOCK_KEY).await?;
                    continue;
                }
                Err(e) => return Err(backend("taking the write lock for an election")(e)),
            }
            let epoch: i64 = sqlx::query_scalar(
                "UPDATE cluster_lease SET epoch = epoch + 1, holder = $1, url = $2, \
                 backend_pid = pg_backend_pid(), since = $3, renewed_at = now() \
                 WHERE id = 1 RETURNING epoch",
            )
            .bind(&o.replica_id)
            .bind(&o.url)
            .bind(fmt_ts(now()))
            .fetch_one(&mut *tx)
            .await
            .map_err(backend("bumping the epoch"))?;
            tx.commit().await.map_err(backend("committing an election"))?;
            let lease = read_lease(&mut *c, o.lease).await?;
            *lock(&self.inner.leader) = Some(lease);
            return u64::try_from(epoch)
                .map_err(|_| StoreError::Backend("postgres: a negative epoch".into()));
        }
    }
}

/// Ends every other backend of this database that holds the advisory lock `key`.
async fn terminate_lock_holders(c: &mut PgConnection, key: i64) -> Result<u64, StoreError> {
    // A bigint key shows as its high half in `classid`, its low half in `objid`.
    let hi = (key >> 32) & 0xffff_ffff;
    let lo = key & 0xffff_ffff;
    let ended: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_locks \
         WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND classid::bigint = $1 AND objid::bigint = $2 AND pid <> pg_backend_pid()",
    )
    .bind(hi)
    .bind(lo)
    .fetch_one(&mut *c)
    .await
    .map_err(backend("ending the backend that holds a lock"))?;
    Ok(u64::try_from(ended).unwrap_or(0))
}

//! The change feed: every replica listens on [`CHANGES_CHANNEL`] and refreshes what a
//! notification names; on every (re)connection it resynchronises fully, since notifications
//! sent while it was not listening are lost.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::watch;

use crate::store::{CHANGES_CHANNEL, PostgresStore};

/// The first wait before listening again after the connection failed; doubled up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait before listening again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a notification (or a reconnection) asks a replica to refresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeEvent {
    /// The route of this slot changed (active version, rollout split or state).
    Slot(String),
    /// The API tokens changed.
    Tokens,
    /// The listener (re)connected: everything may have changed meanwhile.
    Resync,
}

impl ChangeEvent {
    /// The event a notification's payload names (`slot:<name>` or `tokens`); an unknown
    /// payload asks for a full resync.
    pub fn parse(payload: &str) -> Self {
        match payload.split_once(':') {
            Some(("slot", name)) if !name.is_empty() => Self::Slot(name.to_owned()),
            _ if payload == "tokens" => Self::Tokens,
            _ => Self::Resync,
        }
    }
}

/// Where the listener delivers the changes.
#[async_trait]
pub trait ChangeSink: Send + Sync + 'static {
    /// Applies one change; the listener waits for it before reading the next.
    async fn changed(&self, change: ChangeEvent);
}

/// Listens for changes on `store`'s database until `stop` turns true, delivering each to
/// `sink`, and a [`ChangeEvent::Resync`] after every (re)connection.
pub fn spawn_listener(
    store: &PostgresStore,
    sink: Arc<dyn ChangeSink>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let options = store.options().clone();
    tokio::spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        loop {
            if *stop.borrow() {
                return;
            }
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(5))
                .max_lifetime(None)
                .idle_timeout(None)
                .connect_lazy_with(options.clone());
            let listening = async {
                let mut l = PgListener::connect_with(&pool).await?;
                l.eager_reconnect(false);
                l.listen(CHANGES_CHANNEL).await?;
                Ok::<_, sqlx::Error>(l)
            };
            let mut listener = tokio::select! {
                l = tokio::time::timeout(Duration::from_secs(10), listening) => match l {
                    Ok(Ok(l)) => l,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "change feed: cannot listen; retrying");
                        pool.close().await;
                        if wait(&mut stop, backoff).await { return; }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                    Err(_) => {
                        tracing::debug!("change feed: listening timed out; retrying");
                        if wait(&mut stop, backoff).await { return; }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                },
                _ = stop.changed() => return,
            };
            backoff = FIRST_BACKOFF;
            tracing::debug!("change feed: listening");
            sink.changed(ChangeEvent::Resync).await;
            loop {
                tokio::select! {
                    n = listener.try_recv() => match n {
                        Ok(Some(n)) => sink.changed(ChangeEvent::parse(n.payload())).await,
                        Ok(None) => {
                            tracing::warn!("change feed: the connection was lost; listening again");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "change feed: the connection failed; listening again");
                            break;
                        }
                    },
                    _ = stop.changed() => return,
                }
            }
            drop(listener);
            pool.close().await;
            if wait(&mut stop, FIRST_BACKOFF).await {
                return;
            }
        }
    })
}

/// Sleeps `d`; true when `stop` turned true meanwhile.
async fn wait(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_what_changed() {
        assert_eq!(
            ChangeEvent::parse("slot:chat.default"),
            ChangeEvent::Slot("chat.default".into())
        );
        assert_eq!(ChangeEvent::parse("tokens"), ChangeEvent::Tokens);
        assert_eq!(ChangeEvent::parse("slot:"), ChangeEvent::Resync);
        assert_eq!(ChangeEvent::parse("what"), ChangeEvent::Resync);
    }
}

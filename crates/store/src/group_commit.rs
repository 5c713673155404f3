//! Group commit of the token endpoint's writes.
//!
//! Every issued token is a transaction: a commit, and on SQLite the WAL frames of every page
//! it touched (the grants and access-token tables and their indexes) and, now and then, a
//! checkpoint copying them back. Under load most of a token's cost was that fixed part. So the
//! writes of tokens issued at the same time go to one writer task, which takes whatever is
//! waiting, writes it all in one transaction (new grants as multi-row inserts, rotations one
//! after the other), commits once, and only then answers each request: a token is never
//! acknowledged before the commit that makes it durable.
//!
//! Nothing waits for company longer than one turn of the runtime: when the writer is idle,
//! the first write starts as soon as the requests the runtime already holds have had their
//! turn (so that theirs join it), and those that arrive while it commits form the next batch.
//! If a batch fails, each of its writes is retried in a transaction of its own, so one bad
//! write fails alone; only a database that does not answer within the deadline fails the
//! whole batch at once.

use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use crate::audit::insert_chunk;
use crate::grants::{insert_access_tokens, insert_grants, rotate_in_tx};
use crate::{GrantRecord, NewAccessToken, NewRefreshToken, RefreshRotation, Result, Store, StoreError, on_pool};

/// At most this many writes share a transaction.
const MAX_BATCH: usize = 128;
const QUEUE: usize = 4096;

/// The store's handle on its writer task, started by the first write (so that a store can be
/// opened outside a runtime) and ended when the last clone of the store is dropped.
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupCommit(Arc<OnceLock<mpsc::Sender<Pending>>>);

enum Pending {
    Grant { grant: GrantRecord, access: NewAccessToken, done: oneshot::Sender<Result<()>> },
    Rotation { rotation: Rotation, done: oneshot::Sender<Result<RefreshRotation>> },
}

impl Pending {
    fn fail(self, error: StoreError) {
        match self {
            Pending::Grant { done, .. } => {
                let _ = done.send(Err(error));
            }
            Pending::Rotation { done, .. } => {
                let _ = done.send(Err(error));
            }
        }
    }
}

struct Rotation {
    old_digest: Vec<u8>,
    now: i64,
    refresh: NewRefreshToken,
    access: NewAccessToken,
}

impl Store {
    /// Records a new grant with its first access token, committed with the other token writes
    /// of the moment; returns once the commit is done.
    pub async fn insert_grant_with_access_token(&self, grant: &GrantRecord, access: &NewAccessToken) -> Result<()> {
        let (done, answer) = oneshot::channel();
        self.submit(Pending::Grant { grant: grant.clone(), access: access.clone(), done }).await;
        answer.await.map_err(|_| writer_gone())?
    }

    /// Rotates a refresh token: the old one is spent, the new one and an access token are
    /// recorded, all or nothing. Presenting a spent token revokes the whole family. Committed
    /// with the other token writes of the moment; returns once the commit is done.
    pub async fn rotate_refresh_token(
        &self,
        old_digest: &[u8],
        now: i64,
        refresh: &NewRefreshToken,
        access: &NewAccessToken,
    ) -> Result<RefreshRotation> {
        let (done, answer) = oneshot::channel();
        let rotation =
            Rotation { old_digest: old_digest.to_vec(), now, refresh: refresh.clone(), access: access.clone() };
        self.submit(Pending::Rotation { rotation, done }).await;
        answer.await.map_err(|_| writer_gone())?
    }

    /// Hands `pending` to the writer task, starting it on first use; when the queue is full or
    /// the task is gone with the runtime that ran it, writes it here, alone.
    async fn submit(&self, pending: Pending) {
        let sender = self.group_commit.0.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(QUEUE);
            // The task holds a store without this handle, so dropping the last store closes the
            // channel and ends it.
            let store = Store { group_commit: GroupCommit::default(), ..self.clone() };
            tokio::spawn(store.write_batches(receiver));
            sender
        });
        if let Err(refused) = sender.try_send(pending) {
            self.write_alone(refused.into_inner()).await;
        }
    }

    async fn write_batches(self, mut receiver: mpsc::Receiver<Pending>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
            // Let every request the runtime already holds (ready tasks, and sockets that became
            // readable) reach its write before this batch is closed.
            tokio::task::yield_now().await;
            while batch.len() < MAX_BATCH
                && let Ok(pending) = receiver.try_recv()
            {
                batch.push(pending);
            }
            match self.write_batch(&batch).await {
                Ok(rotations) => {
                    let mut rotations = rotations.into_iter();
                    for pending in batch.drain(..) {
                        match pending {
                            Pending::Grant { done, .. } => {
                                let _ = done.send(Ok(()));
                            }
                            Pending::Rotation { done, .. } => {
                                let _ = done.send(rotations.next().ok_or_else(writer_gone));
                            }
                        }
                    }
                }
                // The database did not answer: no write alone would do better, and each would
                // wait out the deadline again.
                Err(StoreError::Timeout(deadline)) => {
                    for pending in batch.drain(..) {
                        pending.fail(StoreError::Timeout(deadline));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, writes = batch.len(), "a group commit failed; writing each token alone");
                    for pending in batch.drain(..) {
                        self.write_alone(pending).await;
                    }
                }
            }
        }
    }

    /// Writes `batch` in one transaction: its new grants and their access tokens as multi-row
    /// inserts, then its rotations in the order they arrived. Returns the rotations' outcomes.
    async fn write_batch(&self, batch: &[Pending]) -> Result<Vec<RefreshRotation>> {
        let grants: Vec<(&GrantRecord, &NewAccessToken)> = batch
            .iter()
            .filter_map(|p| match p {
                Pending::Grant { grant, access, .. } => Some((grant, access)),
                Pending::Rotation { .. } => None,
            })
            .collect();
        let rotations: Vec<&Rotation> = batch
            .iter()
            .filter_map(|p| match p {
                Pending::Rotation { rotation, .. } => Some(rotation),
                Pending::Grant { .. } => None,
            })
            .collect();
        let outcomes = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut start = 0;
            while start < grants.len() {
                let end = start + insert_chunk(grants.len() - start);
                let chunk = grants.get(start..end).unwrap_or_default();
                insert_grants!(chunk.iter().map(|(grant, _)| *grant)).build().execute(&mut *tx).await?;
                insert_access_tokens!(chunk.iter().map(|(grant, access)| (grant.id.as_str(), *access)))
                    .build()
                    .execute(&mut *tx)
                    .await?;
                start = end;
            }
            let mut outcomes = Vec::with_capacity(rotations.len());
            for r in &rotations {
                outcomes.push(rotate_in_tx!(tx, &r.old_digest, r.now, &r.refresh, &r.access));
            }
            tx.commit().await?;
            outcomes
        });
        Ok(outcomes)
    }

    /// Writes one pending write in a transaction of its own and answers it.
    async fn write_alone(&self, pending: Pending) {
        match pending {
            Pending::Grant { grant, access, done } => {
                let written = async {
                    on_pool!(self, pool => {
                        let mut tx = pool.begin().await?;
                        insert_grants!([&grant]).build().execute(&mut *tx).await?;
                        insert_access_tokens!([(grant.id.as_str(), &access)]).build().execute(&mut *tx).await?;
                        tx.commit().await?
                    });
                    Ok(())
                };
                let _ = done.send(written.await);
            }
            Pending::Rotation { rotation: r, done } => {
                let rotated = async {
                    Ok(on_pool!(self, pool => {
                        let mut tx = pool.begin().await?;
                        let rotation = rotate_in_tx!(tx, &r.old_digest, r.now, &r.refresh, &r.access);
                        tx.commit().await?;
                        rotation
                    }))
                };
                let _ = done.send(rotated.await);
            }
        }
    }
}

fn writer_gone() -> StoreError {
    StoreError::WriterStopped
}

//! The read models (tenancy, custody, settlements, disputes) as one partitioned projection: a
//! partition applies the events whose key (`route.rs`) falls in it, set-based — the batch is
//! folded in memory into its net row changes (`fold.rs`) and written with one statement per table
//! (`store.rs`), in the consumer's transaction, with the partition's checkpoint.

pub mod fold;
pub mod store;

use std::sync::Arc;

use events::bus::consumer::Projection;
use events::codec::SequencedEvent;
use events::domain::StreamName;
use sqlx::PgConnection;

use crate::route::{route_batch, Decode, Directory, Routed, Touched};
use fold::{Needs, Rows};

/// The tables this projection writes (rebuilt, compared and swapped together).
pub const TABLES: [&str; 13] = [
    "rm_enterprises",
    "rm_keys",
    "rm_users",
    "rm_partners",
    "rm_clients",
    "rm_connections",
    "rm_allocations",
    "rm_balances",
    "rm_deposits",
    "rm_settlements",
    "rm_settlement_transfers",
    "rm_disputes",
    "rm_dispute_closures",
];

/// Partition `partition` of `partitions` of the read models.
#[derive(Debug)]
pub struct ReadModels {
    pub partition: u32,
    pub partitions: u32,
    directory: Arc<Directory>,
    /// Streams touched by the events `prepare` saw, by position.
    touched: Touched,
}

impl ReadModels {
    pub fn new(partition: u32, partitions: u32, directory: Arc<Directory>) -> Self {
        Self {
            partition,
            partitions,
            directory,
            touched: Touched::default(),
        }
    }

    /// The whole read models in one partition (tests, the bench's single partition).
    pub fn single(directory: Arc<Directory>) -> Self {
        Self::new(0, 1, directory)
    }
}

/// Folds the events of `partition` among `routed` (decoded) over the rows they need and writes
/// the result.
pub async fn apply_routed(
    tx: &mut PgConnection,
    directory: &Directory,
    routed: &[Routed],
    partition: u32,
) -> anyhow::Result<()> {
    apply_selected(tx, directory, routed, |r| r.partition == partition).await
}

/// Folds the events of `routed` that `select` picks (decoded) in one pass, and writes the
/// result: a rebuild folds every partition's events together, as their rows are disjoint.
pub async fn apply_selected(
    tx: &mut PgConnection,
    directory: &Directory,
    routed: &[Routed],
    select: impl Fn(&Routed) -> bool,
) -> anyhow::Result<()> {
    match fold_selected(&mut *tx, directory, routed, select).await? {
        Some(rows) => store::write(tx, &rows).await,
        None => Ok(()),
    }
}

/// The fold of the events of `routed` that `select` picks over the rows they need (read on
/// `tx`), not yet written; `None` when none is picked.
pub async fn fold_selected(
    tx: &mut PgConnection,
    directory: &Directory,
    routed: &[Routed],
    select: impl Fn(&Routed) -> bool,
) -> anyhow::Result<Option<Rows>> {
    fold_over(tx, directory, routed, select, None).await
}

/// As `fold_selected`, the rows of `previous` (folded before, perhaps not written yet) taking
/// the place of what is read of the same rows.
pub async fn fold_over(
    tx: &mut PgConnection,
    directory: &Directory,
    routed: &[Routed],
    select: impl Fn(&Routed) -> bool,
    previous: Option<&Rows>,
) -> anyhow::Result<Option<Rows>> {
    let owned: Vec<&events::domain::DomainEvent> = routed
        .iter()
        .filter(|r| select(r))
        .filter_map(|r| r.event.as_ref())
        .collect();
    if owned.is_empty() {
        return Ok(None);
    }
    let needs = Needs::of(owned.iter().copied());
    directory
        .resolve(
            &mut *tx,
            needs.connection_facts.iter().copied(),
            needs.settlement_facts.iter().copied(),
        )
        .await?;
    let mut loaded = store::load(&mut *tx, &needs).await?;
    if let Some(previous) = previous {
        loaded = loaded.overlay(previous, &needs);
    }
    let mut rows = Rows::new(loaded);
    for event in owned {
        rows.apply(event, directory)?;
    }
    Ok(Some(rows))
}

impl Projection for ReadModels {
    async fn apply(
        &mut self,
        tx: &mut PgConnection,
        events: &[SequencedEvent],
    ) -> anyhow::Result<()> {
        let decode = Decode::partition(self.partition);
        let routed =
            route_batch(&mut *tx, &self.directory, events, self.partitions, decode).await?;
        apply_routed(tx, &self.directory, &routed, self.partition).await
    }

    async fn prepare(
        &mut self,
        conn: &mut PgConnection,
        events: &[SequencedEvent],
    ) -> anyhow::Result<()> {
        self.touched
            .prepare(conn, &self.directory, events, self.partitions)
            .await;
        Ok(())
    }

    fn streams_touched(&self, event: &SequencedEvent) -> Vec<StreamName> {
        self.touched.of(event)
    }
}

//! The event catalog projection: events per stream category and the latest position of each.

use std::collections::BTreeMap;

use events::bus::consumer::Projection;
use events::codec::SequencedEvent;
use sqlx::PgConnection;

/// Per category: (events in the batch, highest position in the batch). Pure.
pub fn summarize(events: &[SequencedEvent]) -> BTreeMap<&str, (i64, i64)> {
    let mut out: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for e in events {
        let entry = out.entry(e.stored.stream.category()).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(e.position as i64);
    }
    out
}

/// The tables this projection writes (rebuilt, compared and swapped together).
pub const TABLES: [&str; 1] = ["rm_event_categories"];

#[derive(Debug, Default)]
pub struct Catalog;

impl Projection for Catalog {
    async fn apply(
        &mut self,
        tx: &mut PgConnection,
        events: &[SequencedEvent],
    ) -> anyhow::Result<()> {
        let summary = summarize(events);
        let categories: Vec<&str> = summary.keys().copied().collect();
        let counts: Vec<i64> = summary.values().map(|v| v.0).collect();
        let last: Vec<i64> = summary.values().map(|v| v.1).collect();
        sqlx::query(
            "INSERT INTO rm_event_categories (category, events, last_position)
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])
             ON CONFLICT (category) DO UPDATE
               SET events = rm_event_categories.events + EXCLUDED.events,
                   last_position = greatest(rm_event_categories.last_position, EXCLUDED.last_position)",
        )
        .bind(&categories)
        .bind(&counts)
        .bind(&last)
        .execute(tx)
        .await?;
        Ok(())
    }
}

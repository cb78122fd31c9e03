//! The notifications projection (ADR 0005): who is told what about a settlement,
//! as feed rows whose JSON body is exactly what a webhook delivery sends, plus the webhook URLs
//! and a pending delivery per notification for the finalizer's deliverer.
//!
//! It keeps its own small tables (settlement facts, transfers): consumers advance
//! independently, so another projection's tables may not be where this one is. It is
//! partitioned like the read models (`route.rs`): a settlement's notifications by its partner;
//! connection owners come from the directory (immutable facts), and each partition keeps its
//! own copy of the webhook URLs, in its own order of events, to decide whether a delivery is
//! pending. Notification ids derive from the causing event's id and the recipient, so a
//! redelivered or replayed event can never notify twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use events::bus::consumer::Projection;
use events::codec::{decode_event, EncodedEvent, SequencedEvent};
use events::domain::dispute::ClosuresJoined;
use events::domain::event::Timestamp;
use events::domain::money::CurrencyCode;
use events::domain::settlement::{failure_reason, Instruction, SettlementApi, SettlementStaged};
use events::domain::{DomainEvent, StreamName};
use events::store::{from_datetime, to_datetime};
use serde_json::{json, Map, Value};
use sqlx::types::chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::route::{route_batch, type_id_of, Decode, Directory, Touched};

/// Namespace of notification ids (UUID v5 of event id ‖ recipient enterprise id).
const NOTIFICATION_NAMESPACE: Uuid = Uuid::from_u128(0x5e77_1e00_0000_4000_8000_6e6f_7469_6679);

/// What a notification is about: the `type` field of its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A v2 settlement was staged: to each client enterprise it touches (ADR 0005).
    Staged,
    /// The dispute window closed: to the partner, with the amounts that will execute (ADR 0005).
    Finalized,
    /// It executed: to the partner and every client enterprise it touches (ADR 0005).
    Completed,
    /// Its execution failed (short currencies): to the same recipients as `Completed`.
    Failed,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Staged => "settlement.staged",
            Self::Finalized => "settlement.finalized",
            Self::Completed => "settlement.completed",
            Self::Failed => "settlement.failed",
        }
    }
}

/// One notification to one enterprise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub id: Uuid,
    pub enterprise_id: Uuid,
    pub kind: Kind,
    pub settlement_id: Uuid,
    pub partner_id: Uuid,
    pub external_id: String,
    /// Compact JSON with sorted keys: the webhook body, byte for byte.
    pub body: String,
    pub at: Timestamp,
}

/// What the projection knows of a settlement when one of its events arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettlementFacts {
    pub settlement_id: Uuid,
    pub partner_id: Uuid,
    pub partner_enterprise_id: Uuid,
    pub external_id: String,
    pub dispute_window_ends_at: Timestamp,
    pub top_up_window_ends_at: Timestamp,
    /// Connections withheld at finalization (their transfers do not execute).
    pub withheld: BTreeSet<Uuid>,
    /// Every transfer: the staged instructions and those of joined dispute closures.
    pub transfers: Vec<Instruction>,
    /// Client enterprise of each connection the transfers touch.
    pub owners: BTreeMap<Uuid, Uuid>,
}

pub fn notification_id(event_id: Uuid, enterprise_id: Uuid) -> Uuid {
    let mut name = [0u8; 32];
    name[..16].copy_from_slice(event_id.as_bytes());
    name[16..].copy_from_slice(enterprise_id.as_bytes());
    Uuid::new_v5(&NOTIFICATION_NAMESPACE, &name)
}

/// RFC 3339 UTC with microseconds, as the API writes times.
fn time(t: Timestamp) -> String {
    to_datetime(t).format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Withheld when either connection it touches is (as execution decides).
fn is_withheld(i: &Instruction, withheld: &BTreeSet<Uuid>) -> bool {
    withheld.contains(&i.destination) || i.source.is_some_and(|s| withheld.contains(&s))
}

/// Net per connection and currency of `transfers`, from each connection's side (`+` it
/// gains), for the connections `show` accepts; zero nets are left out.
fn connection_nets<'a>(
    transfers: impl Iterator<Item = &'a Instruction>,
    show: impl Fn(Uuid) -> bool,
) -> Value {
    let mut nets: BTreeMap<Uuid, BTreeMap<&str, i128>> = BTreeMap::new();
    for i in transfers {
        let mut add = |connection: Uuid, delta: i128| {
            if show(connection) {
                let entry = nets
                    .entry(connection)
                    .or_default()
                    .entry(i.currency.as_str())
                    .or_default();
                *entry = entry.saturating_add(delta);
            }
        };
        add(i.destination, i.quantity);
        if let Some(source) = i.source {
            add(source, i.quantity.saturating_neg());
        }
    }
    let object: Map<String, Value> = nets
        .into_iter()
        .filter_map(|(connection, by_currency)| {
            let amounts: Map<String, Value> = by_currency
                .into_iter()
                .filter(|(_, net)| *net != 0)
                .map(|(currency, net)| (currency.to_owned(), net.to_string().into()))
                .collect();
            (!amounts.is_empty()).then(|| (connection.to_string(), Value::Object(amounts)))
        })
        .collect();
    Value::Object(object)
}

/// The partner's own custody net per currency (`−` it pays out): party-shape instructions only.
fn partner_net<'a>(transfers: impl Iterator<Item = &'a Instruction>) -> Value {
    let mut nets: BTreeMap<&str, i128> = BTreeMap::new();
    for i in transfers.filter(|i| i.source.is_none()) {
        let entry = nets.entry(i.currency.as_str()).or_default();
        *entry = entry.saturating_sub(i.quantity);
    }
    Value::Object(
        nets.into_iter()
            .filter(|(_, net)| *net != 0)
            .map(|(c, net)| (c.to_owned(), net.to_string().into()))
            .collect(),
    )
}

/// One client enterprise's part of a settlement: its connections the transfers touch, and
/// those transfers.
#[derive(Default)]
struct Share<'a> {
    connections: BTreeSet<Uuid>,
    transfers: Vec<&'a Instruction>,
}

impl SettlementFacts {
    /// Each touched client enterprise's share, in one pass over the transfers.
    fn shares(&self) -> BTreeMap<Uuid, Share<'_>> {
        let mut shares: BTreeMap<Uuid, Share<'_>> = BTreeMap::new();
        for i in &self.transfers {
            let destination_owner = self.owners.get(&i.destination).copied();
            if let Some(owner) = destination_owner {
                let share = shares.entry(owner).or_default();
                share.connections.insert(i.destination);
                share.transfers.push(i);
            }
            let source = i.source.and_then(|s| self.owners.get(&s).map(|o| (s, *o)));
            if let Some((connection, owner)) = source {
                let share = shares.entry(owner).or_default();
                share.connections.insert(connection);
                if destination_owner != Some(owner) {
                    share.transfers.push(i);
                }
            }
        }
        shares
    }

    fn executing(&self) -> impl Iterator<Item = &Instruction> {
        self.transfers
            .iter()
            .filter(|i| !is_withheld(i, &self.withheld))
    }

    fn notification(
        &self,
        event_id: Uuid,
        enterprise_id: Uuid,
        kind: Kind,
        at: Timestamp,
        extra: Value,
    ) -> Notification {
        let id = notification_id(event_id, enterprise_id);
        let mut body = json!({
            "id": id,
            "type": kind.as_str(),
            "enterpriseId": enterprise_id,
            "settlementId": self.settlement_id,
            "partnerId": self.partner_id,
            "externalId": self.external_id,
            "occurredAt": time(at),
        });
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        Notification {
            id,
            enterprise_id,
            kind,
            settlement_id: self.settlement_id,
            partner_id: self.partner_id,
            external_id: self.external_id.clone(),
            body: body.to_string(),
            at,
        }
    }

    /// Staging: each touched client enterprise, with the amounts of its own connections.
    pub fn staged(
        &self,
        event_id: Uuid,
        cutoff_at: Option<Timestamp>,
        at: Timestamp,
    ) -> Vec<Notification> {
        self.shares()
            .into_iter()
            .map(|(client, share)| {
                let extra = json!({
                    "cutoffAt": cutoff_at.map(time),
                    "disputeWindowEndsAt": time(self.dispute_window_ends_at),
                    "amounts": connection_nets(
                        share.transfers.iter().copied(),
                        |c| share.connections.contains(&c),
                    ),
                });
                self.notification(event_id, client, Kind::Staged, at, extra)
            })
            .collect()
    }

    /// Finalization: the partner, with the final amounts (withheld connections left out).
    pub fn finalized(&self, event_id: Uuid, at: Timestamp) -> Vec<Notification> {
        let extra = json!({
            "amounts": connection_nets(self.executing(), |_| true),
            "partnerNet": partner_net(self.executing()),
            "withheldConnections": self.withheld,
            "topUpWindowEndsAt": time(self.top_up_window_ends_at),
        });
        vec![self.notification(
            event_id,
            self.partner_enterprise_id,
            Kind::Finalized,
            at,
            extra,
        )]
    }

    /// One body per recipient of an execution outcome: each client sees only its own
    /// connections; the partner (also when it is one of the clients) sees everything.
    fn to_all(
        &self,
        event_id: Uuid,
        kind: Kind,
        at: Timestamp,
        extra: impl Fn(Option<&Share<'_>>) -> Value,
    ) -> Vec<Notification> {
        let mut recipients: BTreeMap<Uuid, Value> = self
            .shares()
            .iter()
            .map(|(client, share)| (*client, extra(Some(share))))
            .collect();
        recipients.insert(self.partner_enterprise_id, extra(None));
        recipients
            .into_iter()
            .map(|(enterprise, extra)| self.notification(event_id, enterprise, kind, at, extra))
            .collect()
    }

    /// Execution: the partner and every touched client enterprise, with what moved.
    pub fn completed(&self, event_id: Uuid, at: Timestamp) -> Vec<Notification> {
        self.to_all(event_id, Kind::Completed, at, |share| match share {
            Some(share) => json!({
                "status": "completed",
                "finalizedAt": time(at),
                "amounts": connection_nets(
                    share.transfers.iter().copied().filter(|i| !is_withheld(i, &self.withheld)),
                    |c| share.connections.contains(&c),
                ),
                "withheldConnections": self.withheld.intersection(&share.connections).collect::<Vec<_>>(),
            }),
            None => json!({
                "status": "completed",
                "finalizedAt": time(at),
                "amounts": connection_nets(self.executing(), |_| true),
                "withheldConnections": self.withheld,
                "partnerNet": partner_net(self.executing()),
            }),
        })
    }

    /// A failed execution: the partner and every touched client enterprise, with the reason.
    pub fn failed(
        &self,
        event_id: Uuid,
        short: &[CurrencyCode],
        at: Timestamp,
    ) -> Vec<Notification> {
        let names: Vec<&str> = short.iter().map(CurrencyCode::as_str).collect();
        let reason = failure_reason(short);
        self.to_all(
            event_id,
            Kind::Failed,
            at,
            |_| json!({"status": "failed", "reason": reason, "shortCurrencies": names}),
        )
    }
}

/// The tables this projection writes (rebuilt, compared and swapped together). Webhook
/// deliveries are operational, not rebuilt: a rebuilt notification keeps its id and delivery.
pub const TABLES: [&str; 5] = [
    "rm_notifications",
    "rm_webhooks",
    "notification_settlements",
    "notification_transfer_sets",
    "notification_webhook_replicas",
];

/// Partition `partition` of `partitions` of the notifications.
#[derive(Debug)]
pub struct Notifications {
    pub partition: u32,
    pub partitions: u32,
    directory: Arc<Directory>,
    touched: Touched,
}

impl Notifications {
    pub fn new(partition: u32, partitions: u32, directory: Arc<Directory>) -> Self {
        Self {
            partition,
            partitions,
            directory,
            touched: Touched::default(),
        }
    }
}

impl Projection for Notifications {
    async fn apply(
        &mut self,
        tx: &mut PgConnection,
        events: &[SequencedEvent],
    ) -> anyhow::Result<()> {
        let webhook = type_id_of("WebhookConfigured").unwrap_or(u32::MAX);
        let decode = Decode {
            mine: Some(self.partition),
            types: &[webhook],
            keys: false,
        };
        let routed =
            route_batch(&mut *tx, &self.directory, events, self.partitions, decode).await?;
        let mut replicas: Vec<(Uuid, Option<String>)> = Vec::new();
        for r in &routed {
            let Some(event) = &r.event else { continue };
            if let DomainEvent::WebhookConfigured(e) = event {
                // Every partition keeps the URLs, as of its own place in the log.
                replicas.push((e.enterprise_id, e.url.clone()));
            }
            if r.partition != self.partition {
                continue;
            }
            if !matches!(
                event,
                DomainEvent::WebhookConfigured(_)
                    | DomainEvent::SettlementStaged(_)
                    | DomainEvent::ClosuresJoined(_)
                    | DomainEvent::SettlementFinalized(_)
                    | DomainEvent::SettlementExecuted(_)
                    | DomainEvent::SettlementFailed(_)
            ) {
                continue;
            }
            // URLs configured before this event are what its deliveries see.
            write_replicas(tx, self.partition, &mut replicas).await?;
            let at = Ctx {
                directory: &self.directory,
                partition: self.partition,
            };
            apply(tx, &at, r.event_id, r.position, event).await?;
        }
        write_replicas(tx, self.partition, &mut replicas).await?;
        Ok(())
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

/// What a partition's statements need besides the transaction.
struct Ctx<'a> {
    directory: &'a Directory,
    partition: u32,
}

/// The partition's copy of the webhook URLs, last value per enterprise.
async fn write_replicas(
    tx: &mut PgConnection,
    partition: u32,
    replicas: &mut Vec<(Uuid, Option<String>)>,
) -> sqlx::Result<()> {
    if replicas.is_empty() {
        return Ok(());
    }
    let last: BTreeMap<Uuid, Option<String>> = replicas.drain(..).collect();
    let (enterprises, urls): (Vec<Uuid>, Vec<Option<String>>) = last.into_iter().unzip();
    sqlx::query(
        "INSERT INTO notification_webhook_replicas (partition, enterprise_id, url)
         SELECT $1, * FROM unnest($2::uuid[], $3::text[])
         ON CONFLICT (partition, enterprise_id) DO UPDATE SET url = EXCLUDED.url",
    )
    .bind(partition as i32)
    .bind(&enterprises)
    .bind(&urls)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn apply(
    tx: &mut PgConnection,
    ctx: &Ctx<'_>,
    event_id: Uuid,
    position: u64,
    event: &DomainEvent,
) -> anyhow::Result<()> {
    let notifications = match event {
        DomainEvent::WebhookConfigured(e) => {
            sqlx::query(
                "INSERT INTO rm_webhooks VALUES ($1, $2, $3)
                 ON CONFLICT (enterprise_id) DO UPDATE SET url = EXCLUDED.url, updated_at = EXCLUDED.updated_at",
            )
            .bind(e.enterprise_id)
            .bind(&e.url)
            .bind(to_datetime(e.at))
            .execute(&mut *tx)
            .await?;
            vec![]
        }
        DomainEvent::SettlementStaged(e) => staged(tx, ctx, event_id, e).await?,
        DomainEvent::ClosuresJoined(e) => {
            insert_transfer_set(tx, e.settlement_id, event_id, &joined_instructions(e)).await?;
            vec![]
        }
        DomainEvent::SettlementFinalized(e) => {
            sqlx::query("UPDATE notification_settlements SET withheld_connections = $2 WHERE settlement_id = $1")
                .bind(e.settlement_id)
                .bind(&e.withheld_connections)
                .execute(&mut *tx)
                .await?;
            let at = e.at;
            render(facts(tx, ctx, e.settlement_id).await?, move |f| {
                f.finalized(event_id, at)
            })
            .await?
        }
        DomainEvent::SettlementExecuted(e) => {
            let at = e.at;
            render(facts(tx, ctx, e.settlement_id).await?, move |f| {
                f.completed(event_id, at)
            })
            .await?
        }
        DomainEvent::SettlementFailed(e) => {
            let short: Vec<&str> = e
                .short_currencies
                .iter()
                .map(CurrencyCode::as_str)
                .collect();
            // Only a failure that differs from the last one notified: retries fail alike.
            let changed = sqlx::query(
                "UPDATE notification_settlements SET failed_currencies = $2
                 WHERE settlement_id = $1 AND failed_currencies IS DISTINCT FROM $2",
            )
            .bind(e.settlement_id)
            .bind(&short)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            match changed {
                true => {
                    let (short, at) = (e.short_currencies.clone(), e.at);
                    render(facts(tx, ctx, e.settlement_id).await?, move |f| {
                        f.failed(event_id, &short, at)
                    })
                    .await?
                }
                false => vec![],
            }
        }
        _ => vec![],
    };
    insert_notifications(tx, ctx, &notifications, position).await?;
    Ok(())
}

fn joined_instructions(e: &ClosuresJoined) -> Vec<Instruction> {
    e.closures
        .iter()
        .flat_map(|c| c.transfers.iter().map(|t| t.instruction.clone()))
        .collect()
}

/// Records the settlement and its transfers, then notifies its clients (v2 only: a v1
/// settlement executes at once, and its outcome is what gets notified).
async fn staged(
    tx: &mut PgConnection,
    ctx: &Ctx<'_>,
    event_id: Uuid,
    e: &SettlementStaged,
) -> anyhow::Result<Vec<Notification>> {
    let dispute_ends = Timestamp(e.at.0.saturating_add(e.dispute_window_micros));
    let top_up_ends = Timestamp(dispute_ends.0.saturating_add(e.top_up_window_micros));
    sqlx::query(
        "INSERT INTO notification_settlements
            (settlement_id, partner_id, partner_enterprise_id, external_id, dispute_window_ends_at, top_up_window_ends_at)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(e.settlement_id)
    .bind(e.partner_id)
    .bind(e.partner_enterprise_id)
    .bind(&e.external_id)
    .bind(to_datetime(dispute_ends))
    .bind(to_datetime(top_up_ends))
    .execute(&mut *tx)
    .await?;
    let mut transfers: Vec<Instruction> =
        e.transfers.iter().map(|t| t.instruction.clone()).collect();
    insert_transfer_set(tx, e.settlement_id, event_id, &transfers).await?;
    // Closures joining the settlement are recorded by the same command, right after this event,
    // and may arrive in the next batch: read them from the store so the notification is whole.
    // (Their own arrival then records nothing twice: the set is keyed by their event id.)
    for (joined_id, joined) in joined_in_same_command(tx, event_id).await? {
        let instructions = joined_instructions(&joined);
        insert_transfer_set(tx, e.settlement_id, joined_id, &instructions).await?;
        transfers.extend(instructions);
    }
    if e.api == SettlementApi::V1 {
        return Ok(vec![]);
    }
    let facts = SettlementFacts {
        settlement_id: e.settlement_id,
        partner_id: e.partner_id,
        partner_enterprise_id: e.partner_enterprise_id,
        external_id: e.external_id.clone(),
        dispute_window_ends_at: dispute_ends,
        top_up_window_ends_at: top_up_ends,
        withheld: BTreeSet::new(),
        owners: owners_of(tx, ctx, &transfers).await?,
        transfers,
    };
    let (cutoff_at, at) = (e.cutoff_at, e.at);
    render(Some(facts), move |f| f.staged(event_id, cutoff_at, at)).await
}

/// Renders notifications off the async runtime: a settlement of thousands of lines makes this
/// real CPU work, which must not stall the other consumers and requests sharing the runtime.
async fn render(
    facts: Option<SettlementFacts>,
    notify: impl FnOnce(&SettlementFacts) -> Vec<Notification> + Send + 'static,
) -> anyhow::Result<Vec<Notification>> {
    match facts {
        None => Ok(vec![]),
        Some(facts) => Ok(tokio::task::spawn_blocking(move || notify(&facts)).await?),
    }
}

/// The `ClosuresJoined` events (with their ids) appended in the same transaction as `event_id`.
async fn joined_in_same_command(
    tx: &mut PgConnection,
    event_id: Uuid,
) -> anyhow::Result<Vec<(Uuid, ClosuresJoined)>> {
    let type_id = DomainEvent::TYPES
        .iter()
        .find(|t| t.name == "ClosuresJoined")
        .map(|t| t.id)
        .ok_or_else(|| anyhow::anyhow!("ClosuresJoined is not in the vocabulary"))?;
    let rows: Vec<(Uuid, i16, Vec<u8>)> = sqlx::query_as(
        "SELECT j.event_id, j.schema_version, j.payload FROM events s JOIN events j ON j.txid = s.txid
         WHERE s.event_id = $1 AND j.type_id = $2 ORDER BY j.tx_seq",
    )
    .bind(event_id)
    .bind(i32::try_from(type_id)?)
    .fetch_all(&mut *tx)
    .await?;
    let mut joined = Vec::with_capacity(rows.len());
    for (id, schema_version, payload) in rows {
        let encoded = EncodedEvent {
            type_id,
            schema_version: u16::try_from(schema_version)?,
            payload,
        };
        if let DomainEvent::ClosuresJoined(e) = decode_event(&encoded)? {
            joined.push((id, e));
        }
    }
    Ok(joined)
}

async fn insert_transfer_set(
    tx: &mut PgConnection,
    settlement_id: Uuid,
    event_id: Uuid,
    instructions: &[Instruction],
) -> sqlx::Result<()> {
    if instructions.is_empty() {
        return Ok(());
    }
    let sources: Vec<Option<Uuid>> = instructions.iter().map(|i| i.source).collect();
    let destinations: Vec<Uuid> = instructions.iter().map(|i| i.destination).collect();
    let currencies: Vec<&str> = instructions.iter().map(|i| i.currency.as_str()).collect();
    let quantities: Vec<String> = instructions
        .iter()
        .map(|i| i.quantity.to_string())
        .collect();
    sqlx::query(
        "INSERT INTO notification_transfer_sets VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(settlement_id)
    .bind(event_id)
    .bind(&sources)
    .bind(&destinations)
    .bind(&currencies)
    .bind(&quantities)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The client enterprise of each connection the instructions touch (immutable facts).
async fn owners_of(
    tx: &mut PgConnection,
    ctx: &Ctx<'_>,
    instructions: &[Instruction],
) -> anyhow::Result<BTreeMap<Uuid, Uuid>> {
    let connections: BTreeSet<Uuid> = instructions
        .iter()
        .flat_map(|i| std::iter::once(i.destination).chain(i.source))
        .collect();
    ctx.directory
        .resolve(tx, connections.iter().copied(), [])
        .await?;
    Ok(connections
        .into_iter()
        .filter_map(|c| {
            ctx.directory
                .connection(c)
                .map(|f| (c, f.client_enterprise_id))
        })
        .collect())
}

type FactsRow = (Uuid, Uuid, String, DateTime<Utc>, DateTime<Utc>, Vec<Uuid>);
type TransferSetRow = (Vec<Option<Uuid>>, Vec<Uuid>, Vec<String>, Vec<String>);

/// The settlement as this projection knows it; `None` (logged) for one it never saw staged.
async fn facts(
    tx: &mut PgConnection,
    ctx: &Ctx<'_>,
    settlement_id: Uuid,
) -> anyhow::Result<Option<SettlementFacts>> {
    let row: Option<FactsRow> = sqlx::query_as(
        "SELECT partner_id, partner_enterprise_id, external_id, dispute_window_ends_at,
                top_up_window_ends_at, withheld_connections
         FROM notification_settlements WHERE settlement_id = $1",
    )
    .bind(settlement_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((partner_id, partner_enterprise_id, external_id, dispute_ends, top_up_ends, withheld)) =
        row
    else {
        tracing::warn!(%settlement_id, "settlement event before its staging: nothing to notify");
        return Ok(None);
    };
    let sets: Vec<TransferSetRow> = sqlx::query_as(
        "SELECT sources, destinations, currencies, quantities FROM notification_transfer_sets
         WHERE settlement_id = $1 ORDER BY event_id",
    )
    .bind(settlement_id)
    .fetch_all(&mut *tx)
    .await?;
    let mut transfers = Vec::new();
    for (sources, destinations, currencies, quantities) in sets {
        let lines = sources
            .into_iter()
            .zip(destinations)
            .zip(currencies.iter().zip(&quantities));
        for ((source, destination), (currency, quantity)) in lines {
            transfers.push(Instruction {
                source,
                destination,
                currency: CurrencyCode::parse(currency)?,
                quantity: quantity.parse()?,
            });
        }
    }
    Ok(Some(SettlementFacts {
        settlement_id,
        partner_id,
        partner_enterprise_id,
        external_id,
        dispute_window_ends_at: from_datetime(dispute_ends),
        top_up_window_ends_at: from_datetime(top_up_ends),
        withheld: withheld.into_iter().collect(),
        owners: owners_of(tx, ctx, &transfers).await?,
        transfers,
    }))
}

/// The feed rows, and for each new one its delivery: pending when the enterprise has a webhook
/// URL now (in this partition's order of events), else not_configured.
async fn insert_notifications(
    tx: &mut PgConnection,
    ctx: &Ctx<'_>,
    notifications: &[Notification],
    position: u64,
) -> sqlx::Result<()> {
    if notifications.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = notifications.iter().map(|n| n.id).collect();
    let enterprises: Vec<Uuid> = notifications.iter().map(|n| n.enterprise_id).collect();
    let kinds: Vec<&str> = notifications.iter().map(|n| n.kind.as_str()).collect();
    let settlements: Vec<Uuid> = notifications.iter().map(|n| n.settlement_id).collect();
    let partners: Vec<Uuid> = notifications.iter().map(|n| n.partner_id).collect();
    let externals: Vec<&str> = notifications
        .iter()
        .map(|n| n.external_id.as_str())
        .collect();
    let bodies: Vec<&str> = notifications.iter().map(|n| n.body.as_str()).collect();
    let ats: Vec<DateTime<Utc>> = notifications.iter().map(|n| to_datetime(n.at)).collect();
    sqlx::query(
        "WITH inserted AS (
            INSERT INTO rm_notifications (id, enterprise_id, type, settlement_id, partner_id, external_id, body, position, created_at)
            SELECT u.id, u.enterprise_id, u.type, u.settlement_id, u.partner_id, u.external_id, u.body, $9, u.at
            FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::uuid[], $6::text[], $7::text[], $8::timestamptz[])
                 AS u(id, enterprise_id, type, settlement_id, partner_id, external_id, body, at)
            ON CONFLICT DO NOTHING
            RETURNING id, enterprise_id)
         INSERT INTO webhook_deliveries (notification_id, enterprise_id, status, due_at, updated_at)
         SELECT i.id, i.enterprise_id, CASE WHEN w.url IS NULL THEN 'not_configured' ELSE 'pending' END, now(), now()
         FROM inserted i
         LEFT JOIN notification_webhook_replicas w ON w.partition = $10 AND w.enterprise_id = i.enterprise_id
         ON CONFLICT DO NOTHING",
    )
    .bind(&ids)
    .bind(&enterprises)
    .bind(&kinds)
    .bind(&settlements)
    .bind(&partners)
    .bind(&externals)
    .bind(&bodies)
    .bind(&ats)
    .bind(position as i64)
    .bind(ctx.partition as i32)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: Timestamp = Timestamp(1_767_225_600_000_000);
    const EVENT: Uuid = Uuid::from_u128(0xe1);
    const PARTNER: Uuid = Uuid::from_u128(0x100);
    const CLIENT_A: Uuid = Uuid::from_u128(0xa00);
    const CLIENT_B: Uuid = Uuid::from_u128(0xb00);
    const CONN_A: Uuid = Uuid::from_u128(0xa1);
    const CONN_A2: Uuid = Uuid::from_u128(0xa2);
    const CONN_B: Uuid = Uuid::from_u128(0xb1);

    fn btc() -> CurrencyCode {
        CurrencyCode::parse("BTC").expect("code")
    }

    fn party(destination: Uuid, quantity: i128) -> Instruction {
        Instruction {
            source: None,
            destination,
            currency: btc(),
            quantity,
        }
    }

    fn facts(transfers: Vec<Instruction>, withheld: &[Uuid]) -> SettlementFacts {
        SettlementFacts {
            settlement_id: Uuid::from_u128(0x5e),
            partner_id: Uuid::from_u128(0x101),
            partner_enterprise_id: PARTNER,
            external_id: "daily-1".into(),
            dispute_window_ends_at: Timestamp(AT.0 + 60_000_000),
            top_up_window_ends_at: Timestamp(AT.0 + 120_000_000),
            withheld: withheld.iter().copied().collect(),
            transfers,
            owners: [(CONN_A, CLIENT_A), (CONN_A2, CLIENT_A), (CONN_B, CLIENT_B)]
                .into_iter()
                .collect(),
        }
    }

    fn body(n: &Notification) -> Value {
        serde_json::from_str(&n.body).expect("JSON body")
    }

    #[test]
    fn staging_tells_each_client_only_its_own_amounts() {
        let f = facts(
            vec![
                party(CONN_A, -5),
                party(CONN_A2, 7),
                party(CONN_A, 2),
                party(CONN_B, 9),
            ],
            &[],
        );
        let notified = f.staged(EVENT, Some(AT), AT);
        assert_eq!(
            notified.iter().map(|n| n.enterprise_id).collect::<Vec<_>>(),
            vec![CLIENT_A, CLIENT_B]
        );
        let a = body(&notified[0]);
        assert_eq!(
            a,
            json!({
                "id": notification_id(EVENT, CLIENT_A),
                "type": "settlement.staged",
                "enterpriseId": CLIENT_A,
                "settlementId": f.settlement_id,
                "partnerId": f.partner_id,
                "externalId": "daily-1",
                "occurredAt": "2026-01-01T00:00:00.000000Z",
                "cutoffAt": "2026-01-01T00:00:00.000000Z",
                "disputeWindowEndsAt": "2026-01-01T00:01:00.000000Z",
                "amounts": {CONN_A.to_string(): {"BTC": "-3"}, CONN_A2.to_string(): {"BTC": "7"}},
            })
        );
        assert_eq!(
            body(&notified[1])["amounts"],
            json!({CONN_B.to_string(): {"BTC": "9"}})
        );
        // Deterministic: the same event gives the same ids and bytes.
        assert_eq!(notified, f.staged(EVENT, Some(AT), AT));
        assert_ne!(notified[0].id, notified[1].id);
        assert!(
            notified[0].body.starts_with(r#"{"amounts":"#),
            "sorted keys: {}",
            notified[0].body
        );
    }

    #[test]
    fn broker_transfers_count_for_both_connections() {
        let broker = Instruction {
            source: Some(CONN_A),
            destination: CONN_B,
            currency: btc(),
            quantity: 4,
        };
        let f = facts(vec![broker], &[]);
        let notified = f.staged(EVENT, None, AT);
        assert_eq!(
            body(&notified[0])["amounts"],
            json!({CONN_A.to_string(): {"BTC": "-4"}})
        );
        assert_eq!(
            body(&notified[1])["amounts"],
            json!({CONN_B.to_string(): {"BTC": "4"}})
        );
        assert_eq!(body(&notified[0])["cutoffAt"], Value::Null);
        let done = f.completed(EVENT, AT);
        let partner = done
            .iter()
            .find(|n| n.enterprise_id == PARTNER)
            .expect("partner");
        assert_eq!(
            body(partner)["partnerNet"],
            json!({}),
            "brokers' clients pay each other"
        );
    }

    #[test]
    fn finalization_tells_the_partner_what_will_execute() {
        let broker_into_withheld = Instruction {
            source: Some(CONN_A),
            destination: CONN_B,
            currency: btc(),
            quantity: 1,
        };
        let f = facts(
            vec![
                party(CONN_A, -5),
                party(CONN_A2, 7),
                party(CONN_B, 9),
                broker_into_withheld,
            ],
            &[CONN_B],
        );
        let notified = f.finalized(EVENT, AT);
        assert_eq!(notified.len(), 1);
        assert_eq!(notified[0].enterprise_id, PARTNER);
        let b = body(&notified[0]);
        assert_eq!(b["type"], "settlement.finalized");
        assert_eq!(
            b["amounts"],
            json!({CONN_A.to_string(): {"BTC": "-5"}, CONN_A2.to_string(): {"BTC": "7"}}),
            "withheld connections' transfers, and those touching them, do not execute"
        );
        assert_eq!(b["partnerNet"], json!({"BTC": "-2"}));
        assert_eq!(b["withheldConnections"], json!([CONN_B]));
        assert_eq!(b["topUpWindowEndsAt"], "2026-01-01T00:02:00.000000Z");
    }

    #[test]
    fn outcomes_go_to_the_partner_and_every_client() {
        let f = facts(vec![party(CONN_A, -5), party(CONN_B, 9)], &[CONN_B]);
        let done = f.completed(EVENT, AT);
        assert_eq!(
            done.iter()
                .map(|n| n.enterprise_id)
                .collect::<BTreeSet<_>>(),
            [PARTNER, CLIENT_A, CLIENT_B].into_iter().collect()
        );
        let of = |e: Uuid| {
            body(
                done.iter()
                    .find(|n| n.enterprise_id == e)
                    .expect("recipient"),
            )
        };
        assert_eq!(of(CLIENT_B)["amounts"], json!({}));
        assert_eq!(of(CLIENT_B)["withheldConnections"], json!([CONN_B]));
        assert_eq!(
            of(CLIENT_A)["amounts"],
            json!({CONN_A.to_string(): {"BTC": "-5"}})
        );
        assert_eq!(of(CLIENT_A)["withheldConnections"], json!([]));
        assert!(of(CLIENT_A).get("partnerNet").is_none());
        assert_eq!(of(PARTNER)["partnerNet"], json!({"BTC": "5"}));
        assert_eq!(of(PARTNER)["status"], "completed");

        let failed = f.failed(EVENT, &[btc()], AT);
        assert_eq!(failed.len(), 3);
        let b = body(&failed[0]);
        assert_eq!(
            (
                b["type"].clone(),
                b["status"].clone(),
                b["shortCurrencies"].clone()
            ),
            (json!("settlement.failed"), json!("failed"), json!(["BTC"]))
        );
        // The reason is the domain's, as the settlement's reply gives it.
        assert_eq!(
            b["reason"],
            json!(events::domain::settlement::failure_reason(&[btc()]))
        );
        assert!(b["reason"]
            .as_str()
            .is_some_and(|r| r.contains("short in BTC")));
    }

    #[test]
    fn a_partner_that_is_also_a_client_gets_one_notification() {
        let mut f = facts(vec![party(CONN_A, -5)], &[]);
        f.partner_enterprise_id = CLIENT_A;
        let done = f.completed(EVENT, AT);
        assert_eq!(done.len(), 1);
        assert!(
            body(&done[0]).get("partnerNet").is_some(),
            "the partner's view"
        );
    }
}

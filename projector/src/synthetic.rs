//! Synthetic event logs for the projector's benchmark and its equivalence tests: many tenants,
//! deposits, allocations and deallocations (some released), settlements staged, held, finalized
//! (some connections withheld by disputes), executed, failed and retried, disputes raised,
//! amended, closed and carried into the partner's next settlement, connection and licence
//! changes, keys revoked. Events are made directly (no `decide`, no signatures): what the read
//! models see, at the rate a benchmark needs. Deterministic for a seed.

use std::collections::{BTreeMap, VecDeque};

use events::codec::{encode_event, Actor, Metadata};
use events::domain::client::{client_id_of, wallet_id_of};
use events::domain::connection::{
    network_account_id_of, AllocationCleared, AllocationKind, AllocationRecord, AllocationReleased,
    ConnectionCreated, ConnectionUpdated, ReleaseReason,
};
use events::domain::connection_key::ConnectionKeySchema;
use events::domain::custody::{CustodyAllocated, CustodyDeallocated, DepositCredited};
use events::domain::dispute::{
    CarriedClosure, ClosedBy, ClosuresAssigned, ClosuresJoined, DisputeClosed, DisputeRaised,
    DisputeUpdated,
};
use events::domain::enterprise::{
    EnterpriseCreated, EnterpriseLicenseSet, SigningKeyRegistered, SigningKeyRevoked,
    WebhookConfigured,
};
use events::domain::event::Timestamp;
use events::domain::money::{AmountFormat, CurrencyCode};
use events::domain::partner::{PartnerRegistered, PartnerUpdated};
use events::domain::settlement::{
    ConnectionSettled, CustodySettled, FundsHeld, FundsReleased, Instruction, SettlementApi,
    SettlementExecuted, SettlementFailed, SettlementFinalized, SettlementStaged, Transfer,
};
use events::domain::stream::of;
use events::domain::user::UserCreated;
use events::domain::{CommandId, DomainEvent, StreamName};
use events::store::{AppendRequest, EventStore, NewEvent};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

/// One command's events, in order, each with its stream.
pub type Command = Vec<(StreamName, DomainEvent)>;

const CURRENCIES: [&str; 3] = ["BTC", "ETH", "USDC"];
/// Microseconds between two commands' timestamps.
const TICK_MICROS: i64 = 1_000;

struct Partner {
    id: Uuid,
    enterprise: Uuid,
    connections: Vec<Uuid>,
    /// Closures waiting for this partner's next settlement.
    queued: Vec<CarriedClosure>,
}

struct Conn {
    client: Uuid,
}

/// A settlement whose lifecycle is still ahead.
struct Open {
    id: Uuid,
    partner: usize,
    instructions: Vec<Instruction>,
    /// (dispute id, connection) raised on it.
    disputes: Vec<(Uuid, Uuid)>,
    finalized: bool,
    failed_once: bool,
}

/// Makes commands, one at a time, for `tenants` client enterprises and a partner per eight.
pub struct Generator {
    rng: StdRng,
    at: i64,
    seq: u64,
    clients: Vec<Uuid>,
    partners: Vec<Partner>,
    connections: Vec<Conn>,
    connection_ids: Vec<Uuid>,
    open: VecDeque<Open>,
    setup: VecDeque<Command>,
}

fn id(rng: &mut StdRng) -> Uuid {
    Uuid::from_u128(rng.gen::<u128>())
}

fn currency(code: &str) -> CurrencyCode {
    CurrencyCode::parse(code).unwrap_or_else(|_| unreachable!("a shipped currency code"))
}

impl Generator {
    pub fn new(seed: u64, tenants: usize) -> Self {
        let mut g = Self {
            rng: StdRng::seed_from_u64(seed),
            at: 1_767_225_600_000_000,
            seq: 0,
            clients: Vec::new(),
            partners: Vec::new(),
            connections: Vec::new(),
            connection_ids: Vec::new(),
            open: VecDeque::new(),
            setup: VecDeque::new(),
        };
        let partners = tenants.div_ceil(8).max(1);
        for _ in 0..partners {
            g.add_partner();
        }
        for _ in 0..tenants.max(1) {
            g.add_client();
        }
        g
    }

    fn now(&mut self) -> Timestamp {
        self.at += TICK_MICROS;
        Timestamp(self.at)
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn add_partner(&mut self) {
        let (enterprise, partner, key, user) = (
            id(&mut self.rng),
            id(&mut self.rng),
            id(&mut self.rng),
            id(&mut self.rng),
        );
        let at = self.now();
        let n = self.partners.len();
        self.setup.push_back(vec![
            (
                of::enterprise(enterprise),
                EnterpriseCreated {
                    enterprise_id: enterprise,
                    name: format!("Venue {n}"),
                    oes_license: true,
                    at,
                }
                .into(),
            ),
            (
                of::enterprise(enterprise),
                SigningKeyRegistered {
                    enterprise_id: enterprise,
                    key_id: key,
                    public_key: [n as u8; 32],
                    at,
                }
                .into(),
            ),
            (
                of::user(user),
                UserCreated {
                    user_id: user,
                    name: format!("venue-ops {n}"),
                    token_hash: [0; 32],
                    enterprise_ids: vec![enterprise],
                    auditor: n.is_multiple_of(5),
                    at,
                }
                .into(),
            ),
            (
                of::partner(partner),
                PartnerRegistered {
                    partner_id: partner,
                    enterprise_id: enterprise,
                    name: format!("Venue {n}"),
                    broker: false,
                    client_dispute_window: None,
                    top_up_window: None,
                    amount_format: AmountFormat::BaseUnits,
                    at,
                    connection_key_schema: Some(ConnectionKeySchema::ALL[n % 4]),
                }
                .into(),
            ),
            (
                of::enterprise(enterprise),
                WebhookConfigured {
                    enterprise_id: enterprise,
                    url: Some(format!("https://venue-{n}.example/hooks")),
                    at,
                }
                .into(),
            ),
        ]);
        self.partners.push(Partner {
            id: partner,
            enterprise,
            connections: Vec::new(),
            queued: Vec::new(),
        });
    }

    fn add_client(&mut self) {
        let enterprise = id(&mut self.rng);
        let at = self.now();
        let n = self.clients.len();
        let mut command: Command = vec![
            (
                of::enterprise(enterprise),
                EnterpriseCreated {
                    enterprise_id: enterprise,
                    name: format!("Fund {n}"),
                    oes_license: true,
                    at,
                }
                .into(),
            ),
            (
                of::client(enterprise),
                events::domain::client::ClientRegistered {
                    client_id: client_id_of(enterprise),
                    enterprise_id: enterprise,
                    wallet_id: wallet_id_of(enterprise),
                    at,
                }
                .into(),
            ),
        ];
        for code in CURRENCIES {
            command.push((
                of::custody(enterprise),
                DepositCredited {
                    enterprise_id: enterprise,
                    deposit_id: id(&mut self.rng),
                    external_id: format!("seed-{code}"),
                    currency: currency(code),
                    quantity: 1_000_000_000_000,
                    at,
                }
                .into(),
            ));
        }
        // One to three partners each.
        let wanted = self.rng.gen_range(1..=3usize.min(self.partners.len()));
        let mut chosen: Vec<usize> = Vec::new();
        while chosen.len() < wanted {
            let p = self.rng.gen_range(0..self.partners.len());
            if !chosen.contains(&p) {
                chosen.push(p);
            }
        }
        for p in chosen {
            let connection = id(&mut self.rng);
            command.push((
                of::connection(connection),
                ConnectionCreated {
                    connection_id: connection,
                    name: format!("main-{p}"),
                    client_id: client_id_of(enterprise),
                    client_enterprise_id: enterprise,
                    partner_id: self.partners[p].id,
                    partner_enterprise_id: self.partners[p].enterprise,
                    network_account_id: network_account_id_of(connection),
                    amount_format: AmountFormat::BaseUnits,
                    connection_key: format!("acct-{n}-{p}").into(),
                    nonce: format!("n-{n}-{p}"),
                    proof: "00".repeat(64),
                    at,
                    signed: None,
                }
                .into(),
            ));
            self.partners[p].connections.push(connection);
            self.connections.push(Conn { client: enterprise });
            self.connection_ids.push(connection);
        }
        self.clients.push(enterprise);
        self.setup.push_back(command);
    }

    /// The next command.
    pub fn next_command(&mut self) -> Command {
        if let Some(command) = self.setup.pop_front() {
            return command;
        }
        let roll = self.rng.gen_range(0..100u32);
        match roll {
            0..=34 => self.allocation(AllocationKind::Allocation, false),
            35..=44 => self.allocation(AllocationKind::Deallocation, false),
            45..=47 => self.allocation(AllocationKind::Allocation, true),
            48..=51 => self.deposit(),
            52..=53 => self.rare(),
            _ => self.settlement_step(),
        }
    }

    fn allocation(&mut self, kind: AllocationKind, released: bool) -> Command {
        let c = self.rng.gen_range(0..self.connections.len());
        let (connection, client) = (self.connection_ids[c], self.connections[c].client);
        let code = CURRENCIES[self.rng.gen_range(0..CURRENCIES.len())];
        let quantity = self.rng.gen_range(1..1_000_000i128);
        let at = self.now();
        let n = self.next_seq();
        let record = AllocationRecord {
            allocation_id: id(&mut self.rng),
            kind,
            connection_id: connection,
            currency: currency(code),
            quantity,
            client_external_id: format!("alloc-{n}"),
            initiated_by: client,
            notes: n.is_multiple_of(7).then(|| format!("note {n}")),
            released: released.then_some(ReleaseReason::InsufficientCustodyBalance),
            at,
            signed: None,
        };
        if released {
            return vec![(
                of::connection(connection),
                AllocationReleased { allocation: record }.into(),
            )];
        }
        let allocation_id = record.allocation_id;
        let custody: DomainEvent = match kind {
            AllocationKind::Allocation => CustodyAllocated {
                enterprise_id: client,
                allocation_id,
                connection_id: connection,
                currency: currency(code),
                quantity,
                at,
            }
            .into(),
            AllocationKind::Deallocation => CustodyDeallocated {
                enterprise_id: client,
                allocation_id,
                connection_id: connection,
                currency: currency(code),
                quantity,
                at,
            }
            .into(),
        };
        vec![
            (
                of::connection(connection),
                AllocationCleared { allocation: record }.into(),
            ),
            (of::custody(client), custody),
        ]
    }

    fn deposit(&mut self) -> Command {
        let client = self.clients[self.rng.gen_range(0..self.clients.len())];
        let code = CURRENCIES[self.rng.gen_range(0..CURRENCIES.len())];
        let (at, n) = (self.now(), self.next_seq());
        vec![(
            of::custody(client),
            DepositCredited {
                enterprise_id: client,
                deposit_id: id(&mut self.rng),
                external_id: format!("dep-{n}"),
                currency: currency(code),
                quantity: self.rng.gen_range(1..10_000_000i128),
                at,
            }
            .into(),
        )]
    }

    fn rare(&mut self) -> Command {
        let at = self.now();
        match self.rng.gen_range(0..5u32) {
            0 => {
                let c = self.connection_ids[self.rng.gen_range(0..self.connection_ids.len())];
                let n = self.next_seq();
                vec![(
                    of::connection(c),
                    ConnectionUpdated {
                        connection_id: c,
                        name: Some(format!("renamed-{n}")),
                        active: None,
                        at,
                        signed: None,
                    }
                    .into(),
                )]
            }
            1 => {
                let e = self.clients[self.rng.gen_range(0..self.clients.len())];
                vec![(
                    of::enterprise(e),
                    EnterpriseLicenseSet {
                        enterprise_id: e,
                        oes_license: self.rng.gen_bool(0.8),
                        at,
                    }
                    .into(),
                )]
            }
            2 => {
                let p = self.rng.gen_range(0..self.partners.len());
                vec![(
                    of::partner(self.partners[p].id),
                    PartnerUpdated {
                        partner_id: self.partners[p].id,
                        active: Some(true),
                        client_dispute_window: None,
                        top_up_window: Some(None),
                        at,
                        connection_key_schema: None,
                    }
                    .into(),
                )]
            }
            3 => {
                let e = self.clients[self.rng.gen_range(0..self.clients.len())];
                let key = id(&mut self.rng);
                vec![
                    (
                        of::enterprise(e),
                        SigningKeyRegistered {
                            enterprise_id: e,
                            key_id: key,
                            public_key: [7; 32],
                            at,
                        }
                        .into(),
                    ),
                    (
                        of::enterprise(e),
                        SigningKeyRevoked {
                            enterprise_id: e,
                            key_id: key,
                            at,
                        }
                        .into(),
                    ),
                ]
            }
            _ => {
                let e = self.clients[self.rng.gen_range(0..self.clients.len())];
                let n = self.next_seq();
                vec![(
                    of::enterprise(e),
                    WebhookConfigured {
                        enterprise_id: e,
                        url: (!n.is_multiple_of(3)).then(|| format!("https://fund.example/{n}")),
                        at,
                    }
                    .into(),
                )]
            }
        }
    }

    /// Moves the oldest open settlement one step, or stages a new one.
    fn settlement_step(&mut self) -> Command {
        let stage = self.open.len() < 8 || self.rng.gen_bool(0.3);
        if stage {
            return self.stage();
        }
        let Some(mut open) = self.open.pop_front() else {
            return self.stage();
        };
        let at = self.now();
        let stream = of::settlement(open.id);
        if !open.finalized {
            // Maybe a dispute first, raised, amended, then the finalization.
            if open.disputes.is_empty() && self.rng.gen_bool(0.3) {
                let i = self.rng.gen_range(0..open.instructions.len());
                let connection = open.instructions[i].destination;
                let client = self.client_of(connection);
                let dispute = id(&mut self.rng);
                open.disputes.push((dispute, connection));
                let amounts = vec![(open.instructions[i].currency.clone(), 5)];
                let command = vec![
                    (
                        stream.clone(),
                        DisputeRaised {
                            settlement_id: open.id,
                            dispute_id: dispute,
                            connection_id: connection,
                            client_enterprise_id: client,
                            user_id: client,
                            reason: Some("too much".into()),
                            expected_transfers: amounts.clone(),
                            signed: signed(),
                            at,
                        }
                        .into(),
                    ),
                    (
                        stream.clone(),
                        DisputeUpdated {
                            settlement_id: open.id,
                            dispute_id: dispute,
                            user_id: client,
                            retracted: false,
                            reason: Some("amended".into()),
                            retracted_reason: None,
                            expected_transfers: amounts,
                            signed: signed(),
                            at,
                        }
                        .into(),
                    ),
                ];
                self.open.push_front(open);
                return command;
            }
            open.finalized = true;
            let withheld: Vec<Uuid> = open.disputes.iter().map(|(_, c)| *c).collect();
            let mut command: Command = vec![(
                stream,
                SettlementFinalized {
                    settlement_id: open.id,
                    withheld_connections: withheld.clone(),
                    at,
                }
                .into(),
            )];
            // Withheld holds are released.
            for i in &open.instructions {
                if i.quantity < 0 && withheld.contains(&i.destination) {
                    command.push((
                        of::connection(i.destination),
                        FundsReleased {
                            connection_id: i.destination,
                            settlement_id: open.id,
                            currency: i.currency.clone(),
                            quantity: -i.quantity,
                            at,
                        }
                        .into(),
                    ));
                }
            }
            self.open.push_back(open);
            return command;
        }
        if !open.failed_once && self.rng.gen_bool(0.1) {
            open.failed_once = true;
            let short = open.instructions[0].currency.clone();
            let failed = SettlementFailed {
                settlement_id: open.id,
                short_currencies: vec![short],
                at,
            };
            self.open.push_back(open);
            return vec![(stream, failed.into())];
        }
        self.execute(open, at)
    }

    fn client_of(&self, connection: Uuid) -> Uuid {
        self.connection_ids
            .iter()
            .position(|c| *c == connection)
            .map_or(Uuid::nil(), |i| self.connections[i].client)
    }

    fn execute(&mut self, open: Open, at: Timestamp) -> Command {
        let withheld: Vec<Uuid> = open.disputes.iter().map(|(_, c)| *c).collect();
        let partner = &self.partners[open.partner];
        let mut nets: BTreeMap<(Uuid, CurrencyCode), i128> = BTreeMap::new();
        for i in open
            .instructions
            .iter()
            .filter(|i| !withheld.contains(&i.destination))
        {
            *nets.entry((i.destination, i.currency.clone())).or_default() += i.quantity;
        }
        let mut command: Command = Vec::new();
        let mut partner_net: BTreeMap<CurrencyCode, i128> = BTreeMap::new();
        for ((connection, code), net) in &nets {
            let (consumed, credited) = if *net < 0 { (-net, 0) } else { (0, *net) };
            command.push((
                of::connection(*connection),
                ConnectionSettled {
                    connection_id: *connection,
                    settlement_id: open.id,
                    currency: code.clone(),
                    consumed_held: consumed,
                    credited,
                    at,
                }
                .into(),
            ));
            *partner_net.entry(code.clone()).or_default() -= net;
        }
        for (code, delta) in partner_net {
            command.push((
                of::custody(partner.enterprise),
                CustodySettled {
                    enterprise_id: partner.enterprise,
                    settlement_id: open.id,
                    currency: code,
                    delta,
                    at,
                }
                .into(),
            ));
        }
        command.push((
            of::settlement(open.id),
            SettlementExecuted {
                settlement_id: open.id,
                at,
            }
            .into(),
        ));
        // Disputes raised on it are closed after execution and carried to the next settlement.
        for (dispute, connection) in &open.disputes {
            let closure = id(&mut self.rng);
            let transfers = vec![Transfer {
                transfer_id: Uuid::new_v5(&closure, b"t"),
                instruction: Instruction {
                    source: None,
                    destination: *connection,
                    currency: currency("BTC"),
                    quantity: 3,
                },
            }];
            command.push((
                of::settlement(open.id),
                DisputeClosed {
                    settlement_id: open.id,
                    dispute_id: *dispute,
                    connection_id: *connection,
                    closure_id: closure,
                    closed_by: ClosedBy::Admin,
                    user_id: None,
                    notes: "operator decision".into(),
                    adjusted_transfers: transfers.clone(),
                    signed: None,
                    at,
                }
                .into(),
            ));
            self.partners[open.partner].queued.push(CarriedClosure {
                dispute_id: *dispute,
                disputed_settlement_id: open.id,
                closure_id: closure,
                connection_id: *connection,
                transfers,
            });
        }
        command
    }

    fn stage(&mut self) -> Command {
        let p = self.rng.gen_range(0..self.partners.len());
        if self.partners[p].connections.is_empty() {
            return self.deposit();
        }
        let settlement = id(&mut self.rng);
        let at = self.now();
        let n = self.next_seq();
        let lines = self
            .rng
            .gen_range(1..=6usize)
            .min(self.partners[p].connections.len());
        let mut instructions = Vec::new();
        for k in 0..lines {
            let c =
                self.partners[p].connections[(n as usize + k) % self.partners[p].connections.len()];
            let code = CURRENCIES[self.rng.gen_range(0..CURRENCIES.len())];
            let mut quantity = self.rng.gen_range(-5_000i128..5_000);
            if quantity == 0 {
                quantity = 1;
            }
            instructions.push(Instruction {
                source: None,
                destination: c,
                currency: currency(code),
                quantity,
            });
        }
        let partner = &self.partners[p];
        let transfers: Vec<Transfer> = instructions
            .iter()
            .enumerate()
            .map(|(k, i)| Transfer {
                transfer_id: Uuid::new_v5(&settlement, &(k as u32).to_be_bytes()),
                instruction: i.clone(),
            })
            .collect();
        let stream = of::settlement(settlement);
        let mut command: Command = vec![(
            stream.clone(),
            SettlementStaged {
                settlement_id: settlement,
                partner_id: partner.id,
                partner_enterprise_id: partner.enterprise,
                external_id: format!("daily-{n}"),
                api: SettlementApi::V2,
                notes: n.is_multiple_of(4).then(|| "end of day".to_owned()),
                cutoff_at: Some(at),
                transfers,
                dispute_window_micros: 60_000_000,
                top_up_window_micros: 0,
                initiated_by: partner.enterprise,
                payload: "{}".into(),
                signature: "00".repeat(64),
                key_id: Uuid::nil(),
                at,
            }
            .into(),
        )];
        let queued = std::mem::take(&mut self.partners[p].queued);
        if !queued.is_empty() {
            let partner_id = self.partners[p].id;
            let dispute_ids = queued.iter().map(|c| c.dispute_id).collect();
            command.push((
                stream,
                ClosuresJoined {
                    settlement_id: settlement,
                    closures: queued,
                    at,
                }
                .into(),
            ));
            command.push((
                of::partner(partner_id),
                ClosuresAssigned {
                    partner_id,
                    settlement_id: settlement,
                    dispute_ids,
                    at,
                }
                .into(),
            ));
        }
        for i in instructions.iter().filter(|i| i.quantity < 0) {
            command.push((
                of::connection(i.destination),
                FundsHeld {
                    connection_id: i.destination,
                    settlement_id: settlement,
                    currency: i.currency.clone(),
                    quantity: -i.quantity,
                    at,
                }
                .into(),
            ));
        }
        self.open.push_back(Open {
            id: settlement,
            partner: p,
            instructions,
            disputes: Vec::new(),
            finalized: false,
            failed_once: false,
        });
        command
    }
}

fn signed() -> events::domain::dispute::Signed {
    events::domain::dispute::Signed {
        payload: "{}".into(),
        signature: "00".repeat(64),
        key_id: Uuid::nil(),
    }
}

/// Stream versions, so that appended commands carry the right expected versions.
#[derive(Debug, Default)]
pub struct Versions(BTreeMap<StreamName, u64>);

impl Versions {
    /// An append of `commands` as one request (their streams checked at the versions before).
    pub fn request(&mut self, commands: &[Command], recorded_at: Timestamp) -> AppendRequest {
        let mut expected: BTreeMap<StreamName, u64> = BTreeMap::new();
        let mut events = Vec::new();
        for (stream, event) in commands.iter().flatten() {
            let version = self.0.entry(stream.clone()).or_default();
            expected.entry(stream.clone()).or_insert(*version);
            *version += 1;
            events.push(NewEvent {
                stream: stream.clone(),
                event: encode_event(event),
            });
        }
        let command = CommandId::from_uuid(Uuid::new_v4());
        let mut request_hash = [0u8; 32];
        request_hash[..16].copy_from_slice(command.as_uuid().as_bytes());
        AppendRequest {
            command_id: command,
            request_hash,
            expected: expected.into_iter().collect(),
            events,
            metadata: Metadata {
                command_id: command,
                causation_id: None,
                correlation_id: command.as_uuid(),
                actor: Actor::System,
                request_id: None,
                key_id: None,
            },
            outcome: Vec::new(),
            nonce: None,
            recorded_at,
        }
    }
}

/// Appends at least `events` events of `generator` to `store`, in requests of about
/// `per_request` events. Returns the events appended.
pub async fn fill(
    store: &EventStore,
    generator: &mut Generator,
    versions: &mut Versions,
    events: u64,
    per_request: usize,
) -> anyhow::Result<u64> {
    let mut appended = 0u64;
    while appended < events {
        let mut commands = Vec::new();
        let mut n = 0;
        while n < per_request.max(1) && appended + (n as u64) < events {
            let command = generator.next_command();
            n += command.len();
            commands.push(command);
        }
        let request = versions.request(&commands, Timestamp(generator.at));
        store.append(&request).await?;
        appended += n as u64;
    }
    Ok(appended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_covers_every_read_model_event_and_is_deterministic() {
        let names = |seed| {
            let mut g = Generator::new(seed, 40);
            let mut seen = std::collections::BTreeSet::new();
            let mut all = Vec::new();
            for _ in 0..4_000 {
                for (_, e) in g.next_command() {
                    seen.insert(e.event_type().name);
                    all.push(e);
                }
            }
            (seen, all)
        };
        let (seen, first) = names(1);
        for wanted in [
            "AllocationCleared",
            "AllocationReleased",
            "CustodyDeallocated",
            "SettlementStaged",
            "FundsHeld",
            "SettlementFinalized",
            "FundsReleased",
            "SettlementFailed",
            "SettlementExecuted",
            "DisputeRaised",
            "DisputeUpdated",
            "DisputeClosed",
            "ClosuresJoined",
            "ClosuresAssigned",
            "ConnectionUpdated",
            "EnterpriseLicenseSet",
            "SigningKeyRevoked",
            "PartnerUpdated",
            "WebhookConfigured",
        ] {
            assert!(seen.contains(wanted), "{wanted} never made: {seen:?}");
        }
        assert_eq!(first, names(1).1, "same seed, same events");
    }

    #[test]
    fn merged_commands_carry_each_streams_first_version() {
        let mut g = Generator::new(3, 4);
        let mut versions = Versions::default();
        let first = versions.request(&[g.next_command(), g.next_command()], Timestamp(1));
        assert!(first.expected.iter().all(|(_, v)| *v == 0));
        let client_setup = versions.request(&[g.next_command()], Timestamp(2));
        assert!(!client_setup.expected.is_empty());
    }
}

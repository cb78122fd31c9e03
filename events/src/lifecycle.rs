//! The settlement lifecycle after staging as commands on the one write path, shared by the
//! finalizer and the API's retry routes: finalize (close the dispute window, withhold disputed
//! connections) and execute (move the funds, or record why not).
//!
//! Exactly once comes from the store, not from being the only caller: a step's command id is
//! derived from the settlement and the stream version it acted on, so two finalizers racing on
//! the same step produce one command (the loser gets the winner's outcome), and the aggregate
//! refuses to finalize or execute twice.

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::codec::{Actor, Metadata};
use crate::domain::connection::Connection;
use crate::domain::custody::Custody;
use crate::domain::event::Timestamp;
use crate::domain::settlement::{stream_of, LifecycleRejection, Settlement, SettlementRecord};
use crate::domain::stream::of;
use crate::domain::{CommandId, DomainEvent, State, StreamName};
use crate::store::{
    self, execute, AppendError, Command, Decision, EventStore, ExecuteError, Executed, Loaded,
};

/// The two time-driven steps of a settlement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    Finalize,
    Execute,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Finalize => "finalize",
            Self::Execute => "execute",
        }
    }
}

/// Every stream a step of `record` decides on at `now`: the settlement and the connections the
/// step may change — to finalize, those with a dispute (their holds may be given back); to
/// execute (or to finalize when the top-up window is already over, which executes in the same
/// append), every connection it touches and the partner's custody account. Reading no more than
/// that keeps unrelated client activity from forcing the step to decide again.
pub fn streams(record: &SettlementRecord, step: Step, now: Timestamp) -> Vec<StreamName> {
    let mut streams = vec![of::settlement(record.staged.settlement_id)];
    let executes = step == Step::Execute || now >= record.top_up_window_ends();
    if executes {
        streams.extend(record.connections().into_iter().map(of::connection));
        streams.push(of::custody(record.staged.partner_enterprise_id));
    } else {
        let disputed: std::collections::BTreeSet<Uuid> =
            record.disputes.values().map(|d| d.connection_id).collect();
        streams.extend(
            record
                .connections()
                .into_iter()
                .filter(|c| disputed.contains(c))
                .map(of::connection),
        );
    }
    streams
}

/// Puts each event on its stream.
pub fn route(events: Vec<DomainEvent>) -> Vec<(StreamName, DomainEvent)> {
    events
        .into_iter()
        .filter_map(|e| {
            let stream = stream_of(&e);
            debug_assert!(stream.is_some(), "no stream for {:?}", e.event_type());
            stream.map(|s| (s, e))
        })
        .collect()
}

/// The aggregates a lifecycle decision works on, folded once from loaded streams and kept
/// current as decisions are taken, so several settlements sharing connections or a custody
/// account can be decided one after another in one command.
#[derive(Clone, Debug, Default)]
pub struct Working {
    settlements: HashMap<Uuid, Settlement>,
    connections: HashMap<Uuid, Connection>,
    /// Only custody accounts that were loaded: execution needs the real balance.
    custodies: HashMap<Uuid, Custody>,
}

fn uuid_of(stream: &StreamName) -> Option<Uuid> {
    Uuid::try_parse(stream.id()).ok()
}

impl Working {
    pub fn from_loaded(loaded: &Loaded) -> Self {
        let mut w = Self::default();
        for (stream, loaded) in &loaded.streams {
            let Some(id) = uuid_of(stream) else { continue };
            match &*loaded.state {
                State::Settlement(s) => {
                    w.settlements.insert(id, s.clone());
                }
                State::Connection(c) => {
                    w.connections.insert(id, c.clone());
                }
                State::Custody(c) => {
                    w.custodies.insert(id, c.clone());
                }
                _ => {}
            }
        }
        w
    }

    pub fn settlement(&self, id: Uuid) -> Option<&Settlement> {
        self.settlements.get(&id)
    }

    fn apply(&mut self, events: &[DomainEvent]) {
        for event in events {
            let Some(stream) = stream_of(event) else {
                continue;
            };
            let Some(id) = uuid_of(&stream) else { continue };
            match stream.category() {
                "settlement" => {
                    let s = self.settlements.remove(&id).unwrap_or_default();
                    self.settlements.insert(id, s.evolve(event));
                }
                "connection" => {
                    let c = self.connections.remove(&id).unwrap_or_default();
                    self.connections.insert(id, c.evolve(event));
                }
                "custody" => {
                    let c = self.custodies.remove(&id).unwrap_or_default();
                    self.custodies.insert(id, c.evolve(event));
                }
                _ => {}
            }
        }
    }

    /// Decides `step` of one settlement (pure) and applies its events to the working state.
    /// Finalizing when the top-up window is already over (and the custody was loaded) executes
    /// in the same decision.
    pub fn decide(
        &mut self,
        settlement_id: Uuid,
        step: Step,
        now: Timestamp,
    ) -> Result<Vec<DomainEvent>, LifecycleRejection> {
        let settlement = self
            .settlements
            .get(&settlement_id)
            .cloned()
            .unwrap_or_default();
        let record = settlement.record().ok_or(LifecycleRejection::NotFound)?;
        let mut events = match step {
            Step::Finalize => settlement.decide_finalize(now)?,
            Step::Execute => vec![],
        };
        self.apply(&events);
        let custody = self.custodies.get(&record.staged.partner_enterprise_id);
        let execute =
            step == Step::Execute || (now >= record.top_up_window_ends() && custody.is_some());
        if execute {
            let after = events.iter().fold(settlement.clone(), Settlement::evolve);
            let connections: BTreeMap<Uuid, Connection> = record
                .connections()
                .into_iter()
                .map(|id| (id, self.connections.get(&id).cloned().unwrap_or_default()))
                .collect();
            let custody = custody.cloned().unwrap_or_default();
            match after.decide_execute(&connections, &custody, now) {
                Ok(executed) => {
                    self.apply(&executed);
                    events.extend(executed);
                }
                // Finalizing stands on its own; execution waits for its own step.
                Err(_) if step == Step::Finalize => {}
                Err(e) => return Err(e),
            }
        }
        Ok(events)
    }
}

/// Decides `step` of settlement `settlement_id` on loaded streams (pure). Returns the events and
/// the settlement as they leave it.
pub fn decide(
    loaded: &Loaded,
    settlement_id: Uuid,
    step: Step,
    now: Timestamp,
) -> Result<(Vec<DomainEvent>, Settlement), LifecycleRejection> {
    let mut working = Working::from_loaded(loaded);
    let events = working.decide(settlement_id, step, now)?;
    let after = working
        .settlement(settlement_id)
        .cloned()
        .unwrap_or_default();
    Ok((events, after))
}

/// What running a batch of steps did, per settlement.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Settlements whose step was appended (or a twin's was, first).
    pub done: Vec<(Uuid, Step)>,
    /// Settlements that refused: not due, already done, or missing.
    pub refused: Vec<(Uuid, LifecycleRejection)>,
}

/// Runs the steps of several settlements through load → decide → append in one command, as the
/// engine (`Actor::System`): each is decided on the state the ones before it left, so settlements
/// of one partner share its custody account without contending for it. A settlement that refuses
/// does not hold back the others. The command id follows from the settlements and the stream
/// versions acted on, so a twin batch from another finalizer is one command.
pub async fn run_batch(
    store: &EventStore,
    steps: &[(Uuid, Step)],
    now: Timestamp,
) -> Result<BatchOutcome, ExecuteError> {
    match run_batch_once(store, steps, now).await {
        // A dispute committed after the batch was planned made finalization release a hold on
        // a connection it had not planned to load: plan again on the settlements as they are.
        Err(ExecuteError::Append(AppendError::UndeclaredStream(_))) => {
            run_batch_once(store, steps, now).await
        }
        other => other,
    }
}

async fn run_batch_once(
    store: &EventStore,
    steps: &[(Uuid, Step)],
    now: Timestamp,
) -> Result<BatchOutcome, ExecuteError> {
    let heads: Vec<StreamName> = steps.iter().map(|(id, _)| of::settlement(*id)).collect();
    // Cached heads (the finalizer warms them before they fall due) plan the batch without a
    // read; a head that moved since makes the append refuse, and the command loads it afresh.
    let head = match store::cached(store, &heads) {
        Some(cached) => cached,
        None => store::load(store, &heads).await?,
    };
    let working = Working::from_loaded(&head);
    let mut outcome = BatchOutcome::default();
    let mut streams: Vec<StreamName> = Vec::new();
    let mut identity: Vec<Vec<u8>> = Vec::new();
    let mut wanted: Vec<(Uuid, Step)> = Vec::new();
    for (settlement_id, step) in steps {
        let Some(record) = working
            .settlement(*settlement_id)
            .and_then(Settlement::record)
        else {
            outcome
                .refused
                .push((*settlement_id, LifecycleRejection::NotFound));
            continue;
        };
        let stream = of::settlement(*settlement_id);
        let version = head.streams.get(&stream).map_or(0, |s| s.version);
        let mut part = settlement_id.as_bytes().to_vec();
        part.extend_from_slice(&version.to_be_bytes());
        part.extend_from_slice(step.as_str().as_bytes());
        identity.push(part);
        streams.extend(self::streams(record, *step, now));
        wanted.push((*settlement_id, *step));
    }
    if wanted.is_empty() {
        return Ok(outcome);
    }
    streams.sort();
    streams.dedup();
    let parts: Vec<&[u8]> = identity.iter().map(Vec::as_slice).collect();
    let id = CommandId::derive("lifecycle", &parts);
    let command = Command {
        id,
        request_hash: Sha256::digest(id.as_uuid().as_bytes()).into(),
        metadata: Metadata {
            command_id: id,
            causation_id: None,
            correlation_id: wanted[0].0,
            actor: Actor::System,
            request_id: None,
            key_id: None,
        },
        nonce: None,
        streams,
        recorded_at: now,
    };
    let mut decided = BatchOutcome::default();
    let executed = execute(store, &command, |loaded| {
        let mut working = Working::from_loaded(loaded);
        decided = BatchOutcome::default();
        let mut events = Vec::new();
        for (settlement_id, step) in &wanted {
            match working.decide(*settlement_id, *step, now) {
                Ok(e) => {
                    events.extend(e);
                    decided.done.push((*settlement_id, *step));
                }
                Err(r) => decided.refused.push((*settlement_id, r)),
            }
        }
        Ok::<_, std::convert::Infallible>(Decision {
            events: route(events),
            outcome: b"lifecycle".to_vec(),
        })
    })
    .await?;
    match executed {
        Executed::Committed { .. } => {
            outcome.done.extend(decided.done);
            outcome.refused.extend(decided.refused);
        }
        // A twin committed first: it did what this batch would have.
        Executed::Replayed { .. } => outcome.done.extend(wanted),
        Executed::Rejected(never) => match never {},
    }
    Ok(outcome)
}

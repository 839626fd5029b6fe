//! The application service: runs order commands (with If-Match and idempotency) and
//! answers history questions from the event store.

use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use ordo_es::{
    Aggregate, CommandExecutor, DecodeError, DomainEvent, EventStore, ExecuteError, LoadError,
    Metadata, Position, RecordedEvent, SnapshotStore, StoreError, StreamId,
};

use ordo_domain::command::CreateOrder;
use ordo_domain::event::OrderEvent;
use ordo_domain::order::{Order, OrderCommand, OrderError};
use ordo_domain::values::Status;
use ordo_domain::view::{OrderView, ViewState};

/// UUID namespace of order ids derived from idempotency keys.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x5d1c_8e0a_4a7b_4f0e_9a43_0c0f_0d0e_0001);

/// Who is asking, for the event metadata, and what version they saw.
#[derive(Clone, Debug, Default)]
pub struct CommandContext {
    pub metadata: Metadata,
    /// HTTP If-Match: the version the client last saw.
    pub if_match: Option<u64>,
}

/// An idempotency key with the fingerprint of the body it came with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub fingerprint: String,
}

impl IdempotencyKey {
    pub fn new(key: impl Into<String>, body: &Value) -> Self {
        Self {
            key: key.into(),
            fingerprint: fingerprint(body),
        }
    }
}

/// SHA-256 of the canonical text of a JSON value (object keys sorted, no white space),
/// so that equal JSON gives equal fingerprints whatever its formatting.
pub fn fingerprint(value: &Value) -> String {
    fn canonical(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(key.clone()).to_string());
                    out.push(':');
                    canonical(&map[key], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut text = String::new();
    canonical(value, &mut text);
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a successful command stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandOutcome {
    pub order_id: Uuid,
    pub version: u64,
    /// The consistency token.
    pub position: Position,
}

/// Why a command stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Rule(#[from] OrderError),
    #[error("If-Match does not match: the order is at version {current}")]
    PreconditionFailed { current: u64 },
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyMismatch,
    #[error("too many concurrent writers on this order; retry")]
    Contended,
    #[error(transparent)]
    Store(StoreError),
    #[error("a stored event cannot be decoded")]
    Decode(#[source] DecodeError),
}

impl From<ExecuteError<CommandError>> for CommandError {
    fn from(e: ExecuteError<CommandError>) -> Self {
        match e {
            ExecuteError::Rejected(inner) => inner,
            ExecuteError::Contended { .. } => CommandError::Contended,
            ExecuteError::Store(s) => CommandError::Store(s),
            ExecuteError::Decode(d) => CommandError::Decode(d),
        }
    }
}

impl From<LoadError> for CommandError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Store(s) => CommandError::Store(s),
            LoadError::Decode(d) => CommandError::Decode(d),
        }
    }
}

/// Which past state to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsOf {
    Version(u64),
    Time(OffsetDateTime),
}

/// Why a past state cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("the order does not exist")]
    NotFound,
    #[error("the order has no version {requested}; its current version is {current}")]
    NoSuchVersion { requested: u64, current: u64 },
    #[error("the order did not exist yet at that time")]
    NotYetCreated,
    #[error("the order was deleted at version {version}")]
    DeletedAt { version: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a stored event cannot be decoded")]
    Decode(#[from] DecodeError),
}

/// Runs order commands and history reads.
#[derive(Debug, Clone)]
pub struct OrderService {
    executor: CommandExecutor<Order>,
}

impl OrderService {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            executor: CommandExecutor::new(store),
        }
    }

    /// Loads orders from their latest snapshot and takes one every `every` events.
    pub fn with_snapshots(mut self, snapshots: Arc<dyn SnapshotStore>, every: u64) -> Self {
        self.executor = self.executor.with_snapshots(snapshots, every);
        self
    }

    /// Takes a snapshot of an order now; its version, or None for an unknown order.
    pub async fn snapshot(&self, id: Uuid) -> Result<Option<u64>, CommandError> {
        let stream = StreamId::new(id.to_string());
        Ok(self
            .executor
            .take_snapshot(&stream)
            .await?
            .map(|s| s.version))
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        self.executor.store()
    }

    /// Creates an order. With an idempotency key the order id is derived from the key,
    /// so the event store's own concurrency check makes a repeated request find the first
    /// one, even when both arrive at once.
    pub async fn create(
        &self,
        command: CreateOrder,
        idempotency: Option<IdempotencyKey>,
        ctx: CommandContext,
    ) -> Result<CommandOutcome, CommandError> {
        let order_id = match &idempotency {
            Some(k) => Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, k.key.as_bytes()),
            None => Uuid::now_v7(),
        };
        let mut metadata = ctx.metadata;
        if let Some(k) = &idempotency {
            metadata.idempotency_key = Some(k.key.clone());
            metadata.request_hash = Some(k.fingerprint.clone());
        }
        let stream = StreamId::new(order_id.to_string());
        // A new id cannot exist yet: append without reading first (a repeated
        // idempotency key conflicts and goes down the reading path).
        let result = self
            .executor
            .execute_new(&stream, &metadata, |order: &Order, _version| {
                order
                    .handle(OrderCommand::Create(command.clone()))
                    .map_err(CommandError::Rule)
            })
            .await;
        match result {
            Ok(committed) => Ok(CommandOutcome {
                order_id,
                version: committed.version,
                position: committed.position,
            }),
            Err(ExecuteError::Rejected(CommandError::Rule(OrderError::AlreadyExists))) => {
                match idempotency {
                    Some(key) => self.replay_create(&stream, order_id, &key).await,
                    None => Err(CommandError::Rule(OrderError::AlreadyExists)),
                }
            }
            Err(other) => Err(other.into()),
        }
    }

    /// The first answer to a create with this key, or a mismatch.
    async fn replay_create(
        &self,
        stream: &StreamId,
        order_id: Uuid,
        key: &IdempotencyKey,
    ) -> Result<CommandOutcome, CommandError> {
        let first = self
            .store()
            .read_stream(stream, 1, 1)
            .await
            .map_err(CommandError::Store)?
            .into_iter()
            .next()
            .ok_or(CommandError::Rule(OrderError::AlreadyExists))?;
        let same_key = first.metadata.idempotency_key.as_deref() == Some(key.key.as_str());
        let same_body = first.metadata.request_hash.as_deref() == Some(key.fingerprint.as_str());
        if same_key && same_body {
            Ok(CommandOutcome {
                order_id,
                version: first.version,
                position: first.position,
            })
        } else {
            Err(CommandError::IdempotencyMismatch)
        }
    }

    /// Runs a command on an existing order. Answers in the precedence of docs/api.md:
    /// unknown (404), deleted (410), If-Match (412), then the rules (409).
    pub async fn execute(
        &self,
        order_id: Uuid,
        command: OrderCommand,
        ctx: CommandContext,
    ) -> Result<CommandOutcome, CommandError> {
        let stream = StreamId::new(order_id.to_string());
        let if_match = ctx.if_match;
        let committed = self
            .executor
            .execute(&stream, &ctx.metadata, |order: &Order, version| {
                order.ensure_live()?;
                if let Some(expected) = if_match
                    && expected != version
                {
                    return Err(CommandError::PreconditionFailed { current: version });
                }
                order.handle(command.clone()).map_err(CommandError::Rule)
            })
            .await?;
        Ok(CommandOutcome {
            order_id,
            version: committed.version,
            position: committed.position,
        })
    }

    pub async fn update_status(
        &self,
        id: Uuid,
        status: Status,
        ctx: CommandContext,
    ) -> Result<CommandOutcome, CommandError> {
        self.execute(id, OrderCommand::UpdateStatus { status }, ctx)
            .await
    }

    pub async fn cancel(
        &self,
        id: Uuid,
        reason: Option<String>,
        ctx: CommandContext,
    ) -> Result<CommandOutcome, CommandError> {
        self.execute(id, OrderCommand::Cancel { reason }, ctx).await
    }

    pub async fn delete(
        &self,
        id: Uuid,
        ctx: CommandContext,
    ) -> Result<CommandOutcome, CommandError> {
        self.execute(id, OrderCommand::Delete, ctx).await
    }

    /// Every event of an order, oldest first; empty when unknown.
    pub async fn history(&self, id: Uuid) -> Result<Vec<RecordedEvent>, StoreError> {
        let stream = StreamId::new(id.to_string());
        let mut events = Vec::new();
        loop {
            let page = self
                .store()
                .read_stream(&stream, events.len() as u64 + 1, 1_000)
                .await?;
            let done = page.len() < 1_000;
            events.extend(page);
            if done {
                return Ok(events);
            }
        }
    }

    /// The order's current read-side state, folded from its whole stream.
    pub async fn current_view_state(&self, id: Uuid) -> Result<ViewState, HistoryError> {
        let mut state = ViewState::Absent;
        for envelope in &self.history(id).await? {
            let event = OrderEvent::decode(
                &envelope.event_type,
                envelope.schema_version,
                &envelope.data,
            )?;
            state = state.evolve(envelope, id, &event);
        }
        Ok(state)
    }

    /// The order as it was after event `N`, or at an instant, folded from the store.
    pub async fn view_as_of(&self, id: Uuid, as_of: AsOf) -> Result<OrderView, HistoryError> {
        let events = self.history(id).await?;
        let current = events.last().map_or(0, |e| e.version);
        if current == 0 {
            return Err(HistoryError::NotFound);
        }
        if let AsOf::Version(requested) = as_of
            && requested > current
        {
            return Err(HistoryError::NoSuchVersion { requested, current });
        }
        let mut state = ViewState::Absent;
        for envelope in &events {
            let included = match as_of {
                AsOf::Version(v) => envelope.version <= v,
                AsOf::Time(t) => envelope.occurred_at <= t,
            };
            if !included {
                break;
            }
            let event = OrderEvent::decode(
                &envelope.event_type,
                envelope.schema_version,
                &envelope.data,
            )?;
            state = state.evolve(envelope, id, &event);
        }
        match state {
            ViewState::Live(view) => Ok(*view),
            ViewState::Absent => Err(HistoryError::NotYetCreated),
            ViewState::Deleted { version } => Err(HistoryError::DeletedAt { version }),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use ordo_es::InMemoryStore;

    use super::*;

    fn service() -> OrderService {
        OrderService::new(Arc::new(InMemoryStore::new()))
    }

    fn body() -> Value {
        json!({"customerName": "Ada", "customerEmail": "ada@example.com",
               "items": [{"productId": "p", "productName": "Gear", "quantity": 1, "unitPrice": 2}]})
    }

    fn create_command() -> CreateOrder {
        CreateOrder::parse(&body()).expect("valid")
    }

    #[test]
    fn fingerprints_ignore_key_order_and_spacing_but_not_values() {
        let a: Value =
            serde_json::from_str(r#"{"a": 1, "b": [1, {"c": "x", "d": 2.50}]}"#).expect("json");
        let b: Value = serde_json::from_str(r#"{"b":[1,{"d":2.50,"c":"x"}],"a":1}"#).expect("json");
        let c: Value = serde_json::from_str(r#"{"b":[1,{"d":2.51,"c":"x"}],"a":1}"#).expect("json");
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }

    #[tokio::test]
    async fn the_same_key_and_body_returns_the_first_answer_and_stores_nothing_new() {
        let service = service();
        let key = IdempotencyKey::new("k-1", &body());
        let first = service
            .create(
                create_command(),
                Some(key.clone()),
                CommandContext::default(),
            )
            .await
            .expect("create");
        let again = service
            .create(create_command(), Some(key), CommandContext::default())
            .await
            .expect("replay");
        assert_eq!(first, again);
        assert_eq!(
            service
                .history(first.order_id)
                .await
                .expect("history")
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn the_same_key_with_another_body_is_a_mismatch() {
        let service = service();
        service
            .create(
                create_command(),
                Some(IdempotencyKey::new("k-2", &body())),
                CommandContext::default(),
            )
            .await
            .expect("create");
        let mut other = body();
        other["customerName"] = json!("Bob");
        let err = service
            .create(
                CreateOrder::parse(&other).expect("valid"),
                Some(IdempotencyKey::new("k-2", &other)),
                CommandContext::default(),
            )
            .await
            .expect_err("mismatch");
        assert!(matches!(err, CommandError::IdempotencyMismatch), "{err:?}");
    }

    #[tokio::test]
    async fn concurrent_requests_with_one_key_create_one_order() {
        let service = service();
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let service = service.clone();
            tasks.push(tokio::spawn(async move {
                service
                    .create(
                        create_command(),
                        Some(IdempotencyKey::new("k-3", &body())),
                        CommandContext::default(),
                    )
                    .await
            }));
        }
        let mut ids = std::collections::HashSet::new();
        for task in tasks {
            ids.insert(
                task.await
                    .expect("task")
                    .expect("create or replay")
                    .order_id,
            );
        }
        assert_eq!(ids.len(), 1);
        let id = ids.into_iter().next().expect("one id");
        assert_eq!(service.history(id).await.expect("history").len(), 1);
    }

    #[tokio::test]
    async fn if_match_is_checked_after_existence_and_before_the_rules() {
        let service = service();
        let created = service
            .create(create_command(), None, CommandContext::default())
            .await
            .expect("create");
        let stale = CommandContext {
            if_match: Some(7),
            ..CommandContext::default()
        };
        let err = service
            .update_status(created.order_id, Status::Shipped, stale.clone())
            .await
            .expect_err("stale");
        assert!(
            matches!(err, CommandError::PreconditionFailed { current: 1 }),
            "{err:?}"
        );
        let err = service
            .update_status(Uuid::now_v7(), Status::Confirmed, stale.clone())
            .await
            .expect_err("unknown");
        assert!(
            matches!(err, CommandError::Rule(OrderError::NotFound)),
            "{err:?}"
        );
        service
            .delete(created.order_id, CommandContext::default())
            .await
            .expect("delete");
        let err = service
            .update_status(created.order_id, Status::Confirmed, stale)
            .await
            .expect_err("deleted");
        assert!(
            matches!(err, CommandError::Rule(OrderError::Deleted)),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn concurrent_status_changes_without_if_match_are_decided_on_fresh_state() {
        let service = service();
        let created = service
            .create(create_command(), None, CommandContext::default())
            .await
            .expect("create");
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let service = service.clone();
            tasks.push(tokio::spawn(async move {
                service
                    .update_status(
                        created.order_id,
                        Status::Confirmed,
                        CommandContext::default(),
                    )
                    .await
            }));
        }
        let mut ok = 0;
        for task in tasks {
            match task.await.expect("task") {
                Ok(_) => ok += 1,
                Err(CommandError::Rule(OrderError::SameStatus(Status::Confirmed))) => {}
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(ok, 1, "exactly one writer may confirm");
        assert_eq!(
            service
                .history(created.order_id)
                .await
                .expect("history")
                .len(),
            2
        );
    }

    #[tokio::test]
    async fn past_states_are_folded_from_the_store_even_after_deletion() {
        let service = service();
        let created = service
            .create(create_command(), None, CommandContext::default())
            .await
            .expect("create");
        let id = created.order_id;
        service
            .update_status(id, Status::Confirmed, CommandContext::default())
            .await
            .expect("confirm");
        service
            .delete(id, CommandContext::default())
            .await
            .expect("delete");
        let v1 = service.view_as_of(id, AsOf::Version(1)).await.expect("v1");
        assert_eq!((v1.status, v1.version), (Status::Pending, 1));
        let v2 = service.view_as_of(id, AsOf::Version(2)).await.expect("v2");
        assert_eq!((v2.status, v2.version), (Status::Confirmed, 2));
        assert!(matches!(
            service.view_as_of(id, AsOf::Version(3)).await,
            Err(HistoryError::DeletedAt { version: 3 })
        ));
        assert!(matches!(
            service.view_as_of(id, AsOf::Version(4)).await,
            Err(HistoryError::NoSuchVersion { .. })
        ));
        let before = v1.created_at - time::Duration::seconds(1);
        assert!(matches!(
            service.view_as_of(id, AsOf::Time(before)).await,
            Err(HistoryError::NotYetCreated)
        ));
        assert!(matches!(
            service.view_as_of(Uuid::now_v7(), AsOf::Version(1)).await,
            Err(HistoryError::NotFound)
        ));
    }
}

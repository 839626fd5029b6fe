//! Live updates: `GET /api/v1/events/stream`, every stored event as a Server-Sent Event.
//!
//! ## The feed
//!
//! One tail per process ([`EventFeed::follow_log`]) reads the event store's global log
//! the way the projections do (`read_all` in batches, `wait_for_events` when caught up)
//! and publishes each event, serialised once, to a bounded broadcast channel. No client
//! polls anything: a client either awaits the broadcast or reads the store itself.
//!
//! - A client without a resume token subscribes and takes the tail's checkpoint in one
//!   step, under the lock the tail publishes under: it gets exactly what the tail reads
//!   after that, nothing earlier.
//! - A client with a resume token subscribes first, then reads its backlog from the store
//!   in chunks until a read comes back short, then follows the broadcast, skipping what
//!   its own checkpoint already covers. Whatever the store held after the token is in
//!   its reads; whatever became readable later, the tail read after the subscription
//!   and so published to it.
//! - A client that falls more than the channel's capacity behind (the server stops
//!   polling its stream while its socket is full) sees the broadcast report the lag. It
//!   subscribes again and reads from the store from its own checkpoint, as a resuming
//!   client does. So a slow client costs at most one chunk of events in memory, and the
//!   broadcast's ring is shared by all.
//!
//! Each message is `id: <resume token>`, `event: <eventType>`, and `data:` the event as
//! the events endpoint shows it, plus `orderId`. The stream ends when the server shuts
//! down, and when a client's own store read fails (the client reconnects with its last
//! id and resumes).
//!
//! ## Resume tokens
//!
//! On a one-partition log (SQLite; PostgreSQL with `partitions=1`) the token is the
//! event's position, as the events endpoint shows it (`0.<major>.<minor>`). A log of
//! several partitions (Redis; PostgreSQL by default) has no order across them, so one
//! position does not say how far a reader got in the others: there the token is
//! `<position>/<checkpoint>`, the position followed
//! by the client's whole checkpoint after that event (`<major>.<minor>` per partition,
//! comma-separated, as [`Checkpoint::encode`] writes it). A bare position is accepted only
//! on a one-partition log.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use ordo_es::{Aggregate, Checkpoint, EventStore, Position, RecordedEvent};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{header_text, query_pairs};
use crate::metrics::Metrics;
use crate::openapi::{BadRequest, Unavailable};
use crate::queries::{EventJson, event_json};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(event_stream))
}

/// Where a stream resumes.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Documentation only: `event_stream` reads the query string.
struct ResumeParams {
    /// Resume just after this message id (Last-Event-ID wins when both are sent).
    #[param(max_length = 4096)]
    after: Option<String>,
    /// The API token, when access control is on and the client cannot send
    /// `Authorization` (a browser's EventSource); the header wins when both are sent.
    access_token: Option<String>,
}

/// The browser's reconnection header.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Documentation only.
struct ResumeHeader {
    /// The id of the last message received: the stream resumes just after it. On a
    /// one-partition log it is the event's position; on a partitioned (Redis) log,
    /// `<position>/<checkpoint>`. Without it (or `after`) the stream starts at the newest
    /// event.
    #[param(rename = "Last-Event-ID", max_length = 4096)]
    last_event_id: Option<String>,
}

/// Idle connections get a comment line this often (the contract says at least every
/// 15 s; the margin covers timer slack and proxies that count from their own last read).
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// Events per read of the tail.
const TAIL_BATCH: usize = 1_000;
/// The longest wait of the tail for new events before it reads again.
const IDLE_WAIT: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// What a full stream asks clients to wait before trying again.
const RETRY_AFTER_SECS: u32 = 5;
/// Longest resume token accepted (a checkpoint of a few hundred partitions).
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The bounds of the event stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    /// Clients served at once; one more is answered 503 with `Retry-After`.
    pub max_clients: usize,
    /// Events the broadcast keeps for clients that are behind (shared by all clients).
    /// A client further behind reads from the store instead.
    pub live_buffer: usize,
    /// Events per store read of a client that resumes or fell behind: the most a slow
    /// client makes the server hold for it.
    pub read_chunk: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            max_clients: 256,
            live_buffer: 1_024,
            read_chunk: 256,
        }
    }
}

/// One event as the stream sends it, serialised once for every client.
#[derive(Debug)]
struct Published {
    position: Position,
    event_type: Box<str>,
    data: Box<str>,
}

/// The events endpoint's form of an event, plus `orderId` (null on a stream that is not
/// an order's).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StreamEventJson<'a> {
    #[serde(flatten)]
    event: EventJson<'a>,
    order_id: Option<&'a str>,
}

impl Published {
    fn of(event: &RecordedEvent) -> Self {
        let order_id =
            (event.aggregate_type == ordo_domain::Order::TYPE).then_some(event.stream_id.as_str());
        let json = StreamEventJson {
            event: event_json(event),
            order_id,
        };
        let data = serde_json::to_string(&json).unwrap_or_else(|e| {
            tracing::warn!(error = %e, position = %event.position, "cannot serialise an event for the stream");
            "null".into()
        });
        // SSE field values end at a line break: a stored type holding one (never written
        // by ordo) must not end the field early.
        let event_type = event.event_type.replace(['\r', '\n', '\0'], " ");
        Self {
            position: event.position,
            event_type: event_type.into(),
            data: data.into(),
        }
    }
}

/// The token a client sends back to resume after `position`, read with `checkpoint`.
pub fn resume_token(position: &Position, checkpoint: &Checkpoint) -> String {
    if checkpoint.partitions() <= 1 {
        position.to_string()
    } else {
        format!("{position}/{}", checkpoint.encode())
    }
}

/// Why a resume token was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    Foreign,
    Ambiguous,
}

/// Reads a resume token back into the checkpoint to go on from.
pub fn parse_resume_token(raw: &str, partitions: u32) -> Result<Checkpoint, TokenError> {
    if raw.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let (position, checkpoint) = match raw.split_once('/') {
        Some((position, checkpoint)) => (
            position,
            // A reader's position never has a revision (that is the read models'
            // stored checkpoint's): a token with one was not written by ordo.
            Some(
                Checkpoint::decode(checkpoint)
                    .ok()
                    .filter(|c| c.revision() == 0)
                    .ok_or(TokenError::Malformed)?,
            ),
        ),
        None => (raw, None),
    };
    let position: Position = position.parse().map_err(|_| TokenError::Malformed)?;
    if position.partition >= partitions {
        return Err(TokenError::Foreign);
    }
    match checkpoint {
        Some(checkpoint) => {
            if checkpoint.partitions() != partitions {
                return Err(TokenError::Foreign);
            }
            // The checkpoint is the one after that event: anything else was not written
            // by this stream.
            if checkpoint.cursor(position.partition) != position.cursor {
                return Err(TokenError::Malformed);
            }
            Ok(checkpoint)
        }
        None if partitions == 1 => {
            let mut checkpoint = Checkpoint::origin(1);
            checkpoint.advance(&position);
            Ok(checkpoint)
        }
        None => Err(TokenError::Ambiguous),
    }
}

fn token_problem(source: &str, error: TokenError, partitions: u32) -> ApiError {
    ApiError::BadRequest(match error {
        TokenError::Malformed => format!(
            "{source} is malformed: send back the id of a message of this stream, or an event's position"
        ),
        TokenError::Foreign => format!("{source} does not belong to this event store"),
        TokenError::Ambiguous => format!(
            "{source} is a bare position, which cannot say where to resume in a log of {partitions} partitions: send back the id of a message of this stream"
        ),
    })
}

/// The tail of the global log and the clients that follow it. One per process.
#[derive(Debug)]
pub struct EventFeed {
    store: Arc<dyn EventStore>,
    limits: StreamLimits,
    metrics: Arc<Metrics>,
    sender: broadcast::Sender<Arc<Published>>,
    /// The tail's checkpoint: past every event it has published. Held while the tail
    /// publishes and while a new client subscribes, so that the two agree.
    head: Mutex<Checkpoint>,
    stop: watch::Sender<bool>,
    clients: AtomicUsize,
}

impl EventFeed {
    /// A feed of `store`'s log whose tail starts at `start` (a point known to be at or
    /// before the end of the log, such as the projection's checkpoint; the origin when
    /// `None`). Nothing is read until [`follow_log`](Self::follow_log) runs.
    pub fn new(
        store: Arc<dyn EventStore>,
        limits: StreamLimits,
        metrics: Arc<Metrics>,
        start: Option<Checkpoint>,
    ) -> Arc<Self> {
        let partitions = store.partitions();
        let head = start
            .filter(|c| c.partitions() == partitions)
            .unwrap_or_else(|| Checkpoint::origin(partitions));
        let (sender, _) = broadcast::channel(limits.live_buffer.max(1));
        Arc::new(Self {
            store,
            limits,
            metrics,
            sender,
            head: Mutex::new(head),
            stop: watch::channel(false).0,
            clients: AtomicUsize::new(0),
        })
    }

    /// Ends the tail and every stream (at server shutdown: open streams would otherwise
    /// keep the graceful shutdown waiting for ever).
    pub fn shut_down(&self) {
        self.stop.send_replace(true);
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    fn head(&self) -> MutexGuard<'_, Checkpoint> {
        // Only clones and assignments happen under the lock: a poisoned one still holds a
        // whole checkpoint.
        self.head.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the log and publishes every event until [`shut_down`](Self::shut_down). A
    /// failing store is retried with backoff; clients wait meanwhile.
    pub async fn follow_log(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        let mut checkpoint = self.head().clone();
        let mut backoff = MIN_BACKOFF;
        loop {
            let Some(read) =
                until_stopped(&mut stop, self.store.read_all(&checkpoint, TAIL_BATCH)).await
            else {
                break;
            };
            let waited = match read {
                Ok(batch) if batch.is_empty() => {
                    let Some(waited) = until_stopped(
                        &mut stop,
                        self.store.wait_for_events(&checkpoint, IDLE_WAIT),
                    )
                    .await
                    else {
                        break;
                    };
                    waited
                }
                Ok(batch) => {
                    self.publish(&mut checkpoint, &batch);
                    Ok(())
                }
                Err(e) => Err(e),
            };
            match waited {
                Ok(()) => backoff = MIN_BACKOFF,
                Err(e) => {
                    tracing::warn!(error = %e, ?backoff, "the event stream cannot read the event store; retrying");
                    if until_stopped(&mut stop, tokio::time::sleep(backoff))
                        .await
                        .is_none()
                    {
                        break;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Sends `batch` to the clients and moves the tail's checkpoint past it, in one step
    /// as new clients see it. Events are serialised only when someone listens.
    fn publish(&self, checkpoint: &mut Checkpoint, batch: &[RecordedEvent]) {
        let render = || -> Vec<Arc<Published>> {
            batch.iter().map(|e| Arc::new(Published::of(e))).collect()
        };
        let mut rendered = (self.sender.receiver_count() > 0).then(render);
        for event in batch {
            checkpoint.advance(&event.position);
        }
        let mut head = self.head();
        // A client that subscribed since takes `head` as its start: it needs this batch.
        if rendered.is_none() && self.sender.receiver_count() > 0 {
            rendered = Some(render());
        }
        for item in rendered.into_iter().flatten() {
            // No receiver left: nobody to tell.
            let _ = self.sender.send(item);
        }
        *head = checkpoint.clone();
    }

    /// A place among the clients, or `None` when all are taken.
    fn join(self: &Arc<Self>) -> Option<ClientSlot> {
        let max = self.limits.max_clients;
        self.clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        self.metrics.event_stream_client_joined();
        Some(ClientSlot {
            feed: Arc::clone(self),
        })
    }

    /// A client that starts after `from`, or after the newest event the tail has read.
    fn client(self: &Arc<Self>, from: Option<Checkpoint>, slot: ClientSlot) -> Client {
        let (live, checkpoint, from_store) = match from {
            Some(from) => (self.sender.subscribe(), from, true),
            None => {
                let head = self.head();
                (self.sender.subscribe(), head.clone(), false)
            }
        };
        Client {
            feed: Arc::clone(self),
            checkpoint,
            live,
            from_store,
            backlog: VecDeque::new(),
            stop: self.stop.subscribe(),
            _slot: slot,
        }
    }
}

/// One connected client, counted until it is dropped.
#[derive(Debug)]
struct ClientSlot {
    feed: Arc<EventFeed>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.feed.clients.fetch_sub(1, Ordering::AcqRel);
        self.feed.metrics.event_stream_client_left();
    }
}

/// The state of one client's stream.
#[derive(Debug)]
struct Client {
    feed: Arc<EventFeed>,
    /// Past every event delivered to this client.
    checkpoint: Checkpoint,
    live: broadcast::Receiver<Arc<Published>>,
    /// Reading from the store (resuming, or after falling behind) until a short read.
    from_store: bool,
    /// Events read but not yet delivered: at most one store read's chunk.
    backlog: VecDeque<Arc<Published>>,
    stop: watch::Receiver<bool>,
    _slot: ClientSlot,
}

impl Client {
    /// The next event to deliver, with its resume token; `None` ends the stream.
    async fn next_event(&mut self) -> Option<(String, Arc<Published>)> {
        loop {
            while let Some(item) = self.backlog.pop_front() {
                // Read from the store and then seen again on the broadcast: sent once.
                if self.checkpoint.covers(&item.position) {
                    continue;
                }
                self.checkpoint.advance(&item.position);
                return Some((resume_token(&item.position, &self.checkpoint), item));
            }
            if self.from_store {
                let chunk = self.feed.limits.read_chunk.max(1);
                let read = until_stopped(
                    &mut self.stop,
                    self.feed.store.read_all(&self.checkpoint, chunk),
                )
                .await?;
                match read {
                    Ok(batch) => {
                        self.from_store = batch.len() >= chunk;
                        // The store returns only events after the checkpoint; a full read
                        // of none would be read again and again.
                        if self.from_store
                            && batch.iter().all(|e| self.checkpoint.covers(&e.position))
                        {
                            tracing::error!(
                                checkpoint = %self.checkpoint.encode(),
                                "the event store returned only events before the checkpoint; ending the event stream"
                            );
                            return None;
                        }
                        self.backlog
                            .extend(batch.iter().map(|e| Arc::new(Published::of(e))));
                    }
                    Err(e) => {
                        // The client reconnects with its last id and resumes from there.
                        tracing::warn!(error = %e, "an event stream cannot read the event store; ending it");
                        return None;
                    }
                }
                continue;
            }
            match until_stopped(&mut self.stop, self.live.recv()).await? {
                Ok(item) => self.backlog.push_back(item),
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(
                        missed,
                        "an event stream client fell behind; reading from the store"
                    );
                    self.feed.metrics.event_stream_resynced();
                    // Subscribe before reading, as a resuming client does.
                    self.live = self.feed.sender.subscribe();
                    self.from_store = true;
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// `work`, unless the feed stops first (`None`).
async fn until_stopped<T>(
    stop: &mut watch::Receiver<bool>,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        _ = stop.wait_for(|stopped| *stopped) => None,
        out = work => Some(out),
    }
}

/// The SSE message of one event.
fn frame(token: &str, item: &Published) -> Event {
    Event::default()
        .id(token)
        .event(&*item.event_type)
        .data(&*item.data)
}

/// Every event as it is stored, in the log's order, as Server-Sent Events: `id:` the
/// resume token, `event:` the event type, `data:` the event as the events endpoint shows
/// it plus `orderId`; a comment line at least every 15 s on an idle stream.
#[utoipa::path(
    get,
    path = "/api/v1/events/stream",
    tag = "live",
    operation_id = "eventStream",
    params(ResumeParams, ResumeHeader),
    responses(
        (status = 200, description = "A stream of events (text/event-stream); it ends when the server shuts down.", content_type = "text/event-stream", body = String),
        (status = 400, response = BadRequest),
        (status = 503, response = Unavailable),
    ),
)]
async fn event_stream(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let feed = &state.event_feed;
    let partitions = feed.store.partitions();
    let mut from = None;
    // `access_token` is the guard's (`auth.rs`), for browsers' EventSource.
    for (name, value) in query_pairs(query.as_deref(), &["after", "access_token"])? {
        if name != "after" {
            continue;
        }
        let token = parse_resume_token(value.trim(), partitions)
            .map_err(|e| token_problem("after", e, partitions))?;
        from = Some(token);
    }
    // A browser reconnects to the same URL with the id it saw last: the header wins.
    if let Some(id) = header_text(&headers, "last-event-id")?.map(str::trim)
        && !id.is_empty()
    {
        let token = parse_resume_token(id, partitions)
            .map_err(|e| token_problem("Last-Event-ID", e, partitions))?;
        from = Some(token);
    }
    let slot = feed.join().ok_or_else(|| ApiError::Unavailable {
        detail: format!(
            "the event stream serves at most {} clients at once; retry later",
            feed.limits.max_clients
        ),
        retry_after_secs: RETRY_AFTER_SECS,
    })?;
    let client = feed.client(from, slot);
    let events = futures_util::stream::unfold(client, |mut client| async move {
        let (token, item) = client.next_event().await?;
        Some((Ok::<_, Infallible>(frame(&token, &item)), client))
    });
    Ok(sse(events))
}

/// The SSE response of `events`, with a comment line whenever it has been idle for
/// [`KEEP_ALIVE`].
fn sse(events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

#[cfg(test)]
mod tests;

//! The page's side of the worker protocol: starts www/worker.js, numbers requests, routes each
//! response to the handler of the request it answers, and holds requests back until the worker
//! says it is listening. The worker is a dedicated one, or, for the embedded widget that was
//! given access to Darkroom's first-party storage, a shared worker started through the Storage
//! Access API handle (so its IndexedDB is that storage).
//!
//! A worker that stops (a panic in the wasm, an uncaught error, a failed start) fails every
//! request waiting on it with `ErrorKind::Crashed` and is started again, so the next request
//! works; one that keeps stopping (more than [`MAX_RESTARTS`] times a minute) is given up on.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::Array;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{MessageEvent, MessagePort, Worker, WorkerOptions, WorkerType};

use crate::protocol::{Envelope, ErrorKind, FromWorker, StoreOp, StoreReply, ToWorker};

type Handler = Box<dyn FnMut(Envelope<FromWorker>)>;
type RestartListener = Rc<dyn Fn(&Restart)>;

/// How many times a minute a stopped worker is started again before the page gives up on it.
pub const MAX_RESTARTS: usize = 3;

/// What happened to a worker that stopped, for the page to say.
#[derive(Debug, Clone, PartialEq)]
pub enum Restart {
    /// It was started again; the requests it had were failed.
    Restarted(String),
    /// It stopped too often: no new worker was started.
    GaveUp(String),
}

/// How the worker is started (again, after a crash).
enum Starter {
    Dedicated,
    /// Through a Storage Access API handle, as a shared worker.
    Shared(JsValue),
}

/// Where requests go.
enum Endpoint {
    Dedicated(Worker),
    /// The port of a shared worker that serves this page alone (it is started under a name of
    /// its own).
    Shared(MessagePort),
}

impl Endpoint {
    fn post(&self, message: &JsValue, transfer: &Array) {
        let _ = match self {
            Endpoint::Dedicated(w) => w.post_message_with_transfer(message, transfer),
            Endpoint::Shared(p) => p.post_message_with_transferable(message, transfer),
        };
    }

    fn stop(&self) {
        match self {
            Endpoint::Dedicated(w) => w.terminate(),
            Endpoint::Shared(p) => p.close(),
        }
    }
}

fn refused(e: JsValue) -> String {
    format!("the browser refused to start the generation worker: {e:?}")
}

impl Starter {
    /// Starts a worker whose messages and errors go to `inner` while it is `inner`'s current
    /// one (`generation`).
    fn start(&self, inner: &Rc<Inner>, generation: u32) -> Result<Endpoint, String> {
        match self {
            Starter::Dedicated => {
                let options = WorkerOptions::new();
                options.set_type(WorkerType::Module);
                let worker = Worker::new_with_options("./worker.js", &options).map_err(refused)?;
                worker.set_onmessage(Some(&on_message(inner, generation)));
                worker.set_onerror(Some(&on_error(inner, generation)));
                Ok(Endpoint::Dedicated(worker))
            }
            Starter::Shared(handle) => {
                let constructor: js_sys::Function = js_sys::Reflect::get(handle, &"SharedWorker".into())
                    .map_err(refused)?
                    .dyn_into()
                    .map_err(refused)?;
                let options = js_sys::Object::new();
                let _ = js_sys::Reflect::set(&options, &"type".into(), &"module".into());
                // A name of its own: the worker serves this page alone, as a dedicated one would.
                let name = format!("darkroom-{}", js_sys::Math::random());
                let _ = js_sys::Reflect::set(&options, &"name".into(), &name.into());
                let shared = constructor.call2(handle, &"./worker.js".into(), &options).map_err(refused)?;
                let port: MessagePort = js_sys::Reflect::get(&shared, &"port".into())
                    .map_err(refused)?
                    .dyn_into()
                    .map_err(refused)?;
                port.set_onmessage(Some(&on_message(inner, generation)));
                let _ =
                    js_sys::Reflect::set(&shared, &"onerror".into(), on_error(inner, generation).as_ref());
                Ok(Endpoint::Shared(port))
            }
        }
    }
}

struct Inner {
    starter: Starter,
    /// `None` only while the first worker starts, or after the page gave up on it.
    worker: RefCell<Option<Endpoint>>,
    /// Counts the workers started; messages of an earlier one are ignored.
    generation: Cell<u32>,
    /// Stopped by the page (`stop`) or given up on: not started again.
    stopped: Cell<bool>,
    /// When the worker stopped on its own lately (ms since the epoch).
    crashes: RefCell<Vec<f64>>,
    next_id: Cell<u32>,
    handlers: RefCell<HashMap<u32, Handler>>,
    ready: Cell<bool>,
    waiting: RefCell<Vec<(JsValue, Array)>>,
    on_restart: RefCell<Vec<RestartListener>>,
}

/// A running worker; clones share it.
#[derive(Clone)]
pub struct WorkerClient {
    inner: Rc<Inner>,
}

impl WorkerClient {
    /// Starts the worker script beside the page.
    pub fn spawn() -> Result<WorkerClient, String> {
        Self::launch(Starter::Dedicated)
    }

    /// Starts the worker script as a shared worker through a Storage Access API handle (given
    /// `{SharedWorker: true}`), so that it works on Darkroom's first-party storage.
    pub fn spawn_shared(handle: &JsValue) -> Result<WorkerClient, String> {
        Self::launch(Starter::Shared(handle.clone()))
    }

    fn launch(starter: Starter) -> Result<WorkerClient, String> {
        let inner = Rc::new(Inner {
            starter,
            worker: RefCell::new(None),
            generation: Cell::new(0),
            stopped: Cell::new(false),
            crashes: RefCell::new(Vec::new()),
            next_id: Cell::new(1),
            handlers: RefCell::new(HashMap::new()),
            ready: Cell::new(false),
            waiting: RefCell::new(Vec::new()),
            on_restart: RefCell::new(Vec::new()),
        });
        let endpoint = inner.starter.start(&inner, 0)?;
        *inner.worker.borrow_mut() = Some(endpoint);
        Ok(WorkerClient { inner })
    }

    /// `f` hears of every time the worker stopped on its own (after the requests waiting on it
    /// were failed).
    pub fn on_restart(&self, f: impl Fn(&Restart) + 'static) {
        self.inner.on_restart.borrow_mut().push(Rc::new(f));
    }

    /// Stops the worker (a dedicated one ends; a shared one loses its only page).
    pub fn stop(&self) {
        self.inner.stopped.set(true);
        if let Some(worker) = self.inner.worker.borrow_mut().take() {
            worker.stop();
        }
    }

    /// Sends a request; `handler` sees every response to it until a final one (result, error,
    /// loaded, downloaded). Returns the request's id, for `cancel`.
    pub fn request(
        &self,
        body: ToWorker,
        bytes: Vec<Vec<u8>>,
        handler: impl FnMut(Envelope<FromWorker>) + 'static,
    ) -> u32 {
        let id = self.inner.next_id.get();
        self.inner.next_id.set(id + 1);
        self.inner.handlers.borrow_mut().insert(id, Box::new(handler));
        self.send(Envelope::with_bytes(id, body, bytes));
        id
    }

    /// A change to the browser's stores (the worker is their only writer), with the files it
    /// takes; `handler` sees its progress and then its `Stored` reply or error.
    pub fn store(
        &self,
        op: StoreOp,
        files: Vec<web_sys::Blob>,
        handler: impl FnMut(Envelope<FromWorker>) + 'static,
    ) -> u32 {
        let id = self.inner.next_id.get();
        self.inner.next_id.set(id + 1);
        self.inner.handlers.borrow_mut().insert(id, Box::new(handler));
        self.send(Envelope::with_files(id, ToWorker::Store(op), files));
        id
    }

    /// `store` for a change whose progress does not matter: `done` gets the reply or the error
    /// in words.
    pub fn store_then(
        &self,
        op: StoreOp,
        files: Vec<web_sys::Blob>,
        done: impl FnOnce(Result<StoreReply, String>) + 'static,
    ) -> u32 {
        let mut done = Some(done);
        self.store(op, files, move |message| {
            let outcome = match message.body {
                FromWorker::Stored(reply) => Ok(reply),
                FromWorker::Error { message, .. } => Err(message),
                _ => return,
            };
            if let Some(done) = done.take() {
                done(outcome);
            }
        })
    }

    pub fn cancel(&self, target: u32) {
        let id = self.inner.next_id.get();
        self.inner.next_id.set(id + 1);
        self.send(Envelope::new(id, ToWorker::Cancel { target }));
    }

    fn send(&self, envelope: Envelope<ToWorker>) {
        let id = envelope.id;
        let (message, transfer) = envelope.to_js();
        if self.inner.stopped.get() {
            // Failed on the next turn, as a worker's answer would be: the caller sets up what
            // shows the request after `request` returns.
            let inner = self.inner.clone();
            wasm_bindgen_futures::spawn_local(async move {
                let message = "the generation worker is not running: reload the page".to_string();
                dispatch(&inner, Envelope::new(id, FromWorker::Error { kind: ErrorKind::Crashed, message }));
            });
            return;
        }
        if self.inner.ready.get() {
            if let Some(worker) = self.inner.worker.borrow().as_ref() {
                worker.post(&message, &transfer);
            }
        } else {
            self.inner.waiting.borrow_mut().push((message, transfer));
        }
    }
}

/// The handler of a worker's messages (kept alive as long as that worker).
fn on_message(inner: &Rc<Inner>, generation: u32) -> js_sys::Function {
    let weak = Rc::downgrade(inner);
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        let Some(inner) = weak.upgrade() else { return };
        if inner.generation.get() != generation {
            return;
        }
        match Envelope::<FromWorker>::from_js(&event.data()) {
            Ok(Envelope { body: FromWorker::Crashed { message }, .. }) => crashed(&inner, message),
            Ok(envelope) => dispatch(&inner, envelope),
            Err(e) => web_sys::console::error_1(&format!("worker message: {e}").into()),
        }
    });
    on_message.into_js_value().unchecked_into()
}

/// The handler of a worker failing to start or stopping on an uncaught error.
fn on_error(inner: &Rc<Inner>, generation: u32) -> js_sys::Function {
    let weak = Rc::downgrade(inner);
    let on_error = Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
        let Some(inner) = weak.upgrade() else { return };
        if inner.generation.get() != generation {
            return;
        }
        // A script that fails to load gives a plain Event, without a message.
        let message = js_sys::Reflect::get(&event, &"message".into())
            .ok()
            .and_then(|m| m.as_string())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "it failed to start".into());
        crashed(&inner, message);
    });
    on_error.into_js_value().unchecked_into()
}

/// The worker stopped on its own: a new one takes its place (unless it stopped too often),
/// then every request the old one had is failed, and the page is told.
fn crashed(inner: &Rc<Inner>, message: String) {
    if inner.stopped.get() {
        return;
    }
    let generation = inner.generation.get() + 1;
    inner.generation.set(generation);
    if let Some(old) = inner.worker.borrow_mut().take() {
        old.stop();
    }
    inner.ready.set(false);
    inner.waiting.borrow_mut().clear();
    let now = js_sys::Date::now();
    let recent = {
        let mut crashes = inner.crashes.borrow_mut();
        crashes.retain(|t| now - t < 60_000.0);
        crashes.push(now);
        crashes.len()
    };
    let outcome = if recent > MAX_RESTARTS {
        inner.stopped.set(true);
        Restart::GaveUp(message.clone())
    } else {
        match inner.starter.start(inner, generation) {
            Ok(endpoint) => {
                *inner.worker.borrow_mut() = Some(endpoint);
                Restart::Restarted(message.clone())
            }
            Err(e) => {
                inner.stopped.set(true);
                Restart::GaveUp(format!("{message}; {e}"))
            }
        }
    };
    // Requests the failed handlers send now wait for the new worker.
    let orphans: Vec<(u32, Handler)> = inner.handlers.borrow_mut().drain().collect();
    let text = format!("the generation worker stopped ({message})");
    for (id, mut handler) in orphans {
        handler(Envelope::new(id, FromWorker::Error { kind: ErrorKind::Crashed, message: text.clone() }));
    }
    let listeners: Vec<RestartListener> = inner.on_restart.borrow().clone();
    for listener in listeners {
        listener(&outcome);
    }
}

fn is_final(body: &FromWorker) -> bool {
    matches!(
        body,
        FromWorker::Result { .. }
            | FromWorker::Error { .. }
            | FromWorker::Loaded { .. }
            | FromWorker::Downloaded
            | FromWorker::Stored(_)
            | FromWorker::Crashed { .. }
            | FromWorker::Stats(_)
    )
}

fn dispatch(inner: &Inner, envelope: Envelope<FromWorker>) {
    if envelope.body == FromWorker::Ready {
        inner.ready.set(true);
        if let Some(worker) = inner.worker.borrow().as_ref() {
            for (message, transfer) in inner.waiting.borrow_mut().drain(..) {
                worker.post(&message, &transfer);
            }
        }
        return;
    }
    let id = envelope.id;
    let last = is_final(&envelope.body);
    // Take the handler out while it runs: it may send new requests.
    let Some(mut handler) = inner.handlers.borrow_mut().remove(&id) else { return };
    handler(envelope);
    if !last {
        inner.handlers.borrow_mut().insert(id, handler);
    }
}

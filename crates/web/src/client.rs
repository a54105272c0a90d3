//! The page's side of the worker protocol: starts www/worker.js, numbers requests, routes each
//! response to the handler of the request it answers, and holds requests back until the worker
//! says it is listening. The worker is a dedicated one, or, for the embedded widget that was
//! given access to Darkroom's first-party storage, a shared worker started through the Storage
//! Access API handle (so its IndexedDB is that storage).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::Array;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{MessageEvent, MessagePort, Worker, WorkerOptions, WorkerType};

use crate::protocol::{Envelope, ErrorKind, FromWorker, StoreOp, StoreReply, ToWorker};

type Handler = Box<dyn FnMut(Envelope<FromWorker>)>;

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
}

struct Inner {
    worker: Endpoint,
    next_id: Cell<u32>,
    handlers: RefCell<HashMap<u32, Handler>>,
    ready: Cell<bool>,
    waiting: RefCell<Vec<(JsValue, Array)>>,
}

/// A running worker; clones share it.
#[derive(Clone)]
pub struct WorkerClient {
    inner: Rc<Inner>,
}

impl WorkerClient {
    /// Starts the worker script beside the page.
    pub fn spawn() -> Result<WorkerClient, String> {
        let options = WorkerOptions::new();
        options.set_type(WorkerType::Module);
        let worker = Worker::new_with_options("./worker.js", &options)
            .map_err(|e| format!("the browser refused to start the generation worker: {e:?}"))?;
        let client = Self::connect(Endpoint::Dedicated(worker.clone()));
        worker.set_onmessage(Some(&client.on_message()));
        worker.set_onerror(Some(&client.on_error()));
        Ok(client)
    }

    /// Starts the worker script as a shared worker through a Storage Access API handle (given
    /// `{SharedWorker: true}`), so that it works on Darkroom's first-party storage.
    pub fn spawn_shared(handle: &JsValue) -> Result<WorkerClient, String> {
        fn fail(e: JsValue) -> String {
            format!("the browser refused to start the generation worker: {e:?}")
        }
        let constructor: js_sys::Function =
            js_sys::Reflect::get(handle, &"SharedWorker".into()).map_err(fail)?.dyn_into().map_err(fail)?;
        let options = js_sys::Object::new();
        let _ = js_sys::Reflect::set(&options, &"type".into(), &"module".into());
        // A name of its own: the worker serves this page alone, as a dedicated one would.
        let name = format!("darkroom-{}", js_sys::Math::random());
        let _ = js_sys::Reflect::set(&options, &"name".into(), &name.into());
        let shared = constructor.call2(handle, &"./worker.js".into(), &options).map_err(fail)?;
        let port: MessagePort =
            js_sys::Reflect::get(&shared, &"port".into()).map_err(fail)?.dyn_into().map_err(fail)?;
        let client = Self::connect(Endpoint::Shared(port.clone()));
        port.set_onmessage(Some(&client.on_message()));
        let _ = js_sys::Reflect::set(&shared, &"onerror".into(), client.on_error().as_ref());
        Ok(client)
    }

    fn connect(worker: Endpoint) -> WorkerClient {
        let inner = Rc::new(Inner {
            worker,
            next_id: Cell::new(1),
            handlers: RefCell::new(HashMap::new()),
            ready: Cell::new(false),
            waiting: RefCell::new(Vec::new()),
        });
        WorkerClient { inner }
    }

    /// The handler of the worker's messages (kept alive for the page's lifetime).
    fn on_message(&self) -> js_sys::Function {
        let weak = Rc::downgrade(&self.inner);
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            let Some(inner) = weak.upgrade() else { return };
            match Envelope::<FromWorker>::from_js(&event.data()) {
                Ok(envelope) => dispatch(&inner, envelope),
                Err(e) => web_sys::console::error_1(&format!("worker message: {e}").into()),
            }
        });
        on_message.into_js_value().unchecked_into()
    }

    /// The handler of the worker failing to start or stopping.
    fn on_error(&self) -> js_sys::Function {
        let weak = Rc::downgrade(&self.inner);
        let on_error = Closure::<dyn FnMut(web_sys::ErrorEvent)>::new(move |event: web_sys::ErrorEvent| {
            let Some(inner) = weak.upgrade() else { return };
            // A worker that failed to start fails everything that waits on it.
            let message = format!("the generation worker stopped: {}", event.message());
            let ids: Vec<u32> = inner.handlers.borrow().keys().copied().collect();
            for id in ids {
                dispatch(
                    &inner,
                    Envelope::new(id, FromWorker::Error { kind: ErrorKind::Other, message: message.clone() }),
                );
            }
        });
        on_error.into_js_value().unchecked_into()
    }

    /// Stops the worker (a dedicated one ends; a shared one loses its only page).
    pub fn stop(&self) {
        match &self.inner.worker {
            Endpoint::Dedicated(w) => w.terminate(),
            Endpoint::Shared(p) => p.close(),
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
        let (message, transfer) = envelope.to_js();
        if self.inner.ready.get() {
            self.inner.worker.post(&message, &transfer);
        } else {
            self.inner.waiting.borrow_mut().push((message, transfer));
        }
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
    )
}

fn dispatch(inner: &Inner, envelope: Envelope<FromWorker>) {
    if envelope.body == FromWorker::Ready {
        inner.ready.set(true);
        for (message, transfer) in inner.waiting.borrow_mut().drain(..) {
            inner.worker.post(&message, &transfer);
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

//! The page's side of the worker protocol: starts www/worker.js, numbers requests, routes each
//! response to the handler of the request it answers, and holds requests back until the worker
//! says it is listening.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::Array;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{MessageEvent, Worker, WorkerOptions, WorkerType};

use crate::protocol::{Envelope, ErrorKind, FromWorker, ToWorker};

type Handler = Box<dyn FnMut(Envelope<FromWorker>)>;

struct Inner {
    worker: Worker,
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
        let inner = Rc::new(Inner {
            worker,
            next_id: Cell::new(1),
            handlers: RefCell::new(HashMap::new()),
            ready: Cell::new(false),
            waiting: RefCell::new(Vec::new()),
        });
        let weak = Rc::downgrade(&inner);
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            let Some(inner) = weak.upgrade() else { return };
            match Envelope::<FromWorker>::from_js(&event.data()) {
                Ok(envelope) => dispatch(&inner, envelope),
                Err(e) => web_sys::console::error_1(&format!("worker message: {e}").into()),
            }
        });
        inner.worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        on_message.forget();
        let weak = Rc::downgrade(&inner);
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
        inner.worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        on_error.forget();
        Ok(WorkerClient { inner })
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

    pub fn cancel(&self, target: u32) {
        let id = self.inner.next_id.get();
        self.inner.next_id.set(id + 1);
        self.send(Envelope::new(id, ToWorker::Cancel { target }));
    }

    fn send(&self, envelope: Envelope<ToWorker>) {
        let (message, transfer) = envelope.to_js();
        if self.inner.ready.get() {
            let _ = self.inner.worker.post_message_with_transfer(&message, &transfer);
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
    )
}

fn dispatch(inner: &Inner, envelope: Envelope<FromWorker>) {
    if envelope.body == FromWorker::Ready {
        inner.ready.set(true);
        for (message, transfer) in inner.waiting.borrow_mut().drain(..) {
            let _ = inner.worker.post_message_with_transfer(&message, &transfer);
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

// Darkroom's embed script: mounts Darkroom in an iframe served from Darkroom's own origin and
// talks to it over a versioned postMessage protocol. Prompts and images stay on the user's
// device; the host page receives only the images the user chooses to insert.
//
//   <script src="https://darkroom.example/embed.js"></script>
//   const dr = await Darkroom.mount(document.querySelector('#slot'), { model: 'sd-turbo' });
//   dr.addEventListener('progress', (e) => console.log(e.detail));   // {stage, fraction}
//   const { png, parameters } = await dr.generate({ prompt: 'a lighthouse at dusk', seed: 1 });
//   dr.addEventListener('insert', (e) => use(e.detail.png));         // made and inserted by the user
//   dr.cancel();
//
// Errors reject with a DarkroomError whose `code` is one of: denied (the user refused this
// site), dismissed (the user discarded the image), busy, invalid (bad parameters), model (the
// user refused to download what the request needs, or a model is damaged), gpu, cancelled,
// unavailable (the widget did not start). A request that needs a model this browser lacks
// waits while the user downloads it: the page is not told what the user has.
(() => {
  const VERSION = 1;
  const script = document.currentScript;
  const defaultBase = script ? new URL('.', script.src).href : null;

  class DarkroomError extends Error {
    constructor(code, message) {
      super(message);
      this.name = 'DarkroomError';
      this.code = code;
    }
  }

  class Widget extends EventTarget {
    constructor(iframe, origin) {
      super();
      this.iframe = iframe;
      this.origin = origin;
      this.pending = new Map();
      this.nextId = 1;
      this.onMessage = (event) => this.receive(event);
      window.addEventListener('message', this.onMessage);
    }

    receive(event) {
      if (event.origin !== this.origin || event.source !== this.iframe.contentWindow) return;
      const m = event.data;
      if (!m || m.darkroom !== VERSION || typeof m.type !== 'string') return;
      if (m.type === 'ready') {
        this.dispatchEvent(new CustomEvent('ready', { detail: m }));
        return;
      }
      if (m.type === 'result' && m.id == null && m.png instanceof ArrayBuffer) {
        // An image the user made in the widget and chose to insert.
        const detail = { png: new Blob([m.png], { type: 'image/png' }), parameters: String(m.parameters ?? '') };
        this.dispatchEvent(new CustomEvent('insert', { detail }));
        return;
      }
      const job = this.pending.get(m.id);
      if (!job) return;
      if (m.type === 'progress') {
        const detail = { stage: m.stage, fraction: m.fraction };
        job.onProgress?.(detail);
        this.dispatchEvent(new CustomEvent('progress', { detail }));
      } else if (m.type === 'result') {
        this.pending.delete(m.id);
        job.resolve({ png: new Blob([m.png], { type: 'image/png' }), parameters: m.parameters });
      } else if (m.type === 'error') {
        this.pending.delete(m.id);
        job.reject(new DarkroomError(m.code, m.message));
      }
    }

    post(message, transfer = []) {
      this.iframe.contentWindow.postMessage({ darkroom: VERSION, ...message }, this.origin, transfer);
    }

    /// Asks the widget for an image. `init` and `mask` are PNG Blobs (mask: white repaints);
    /// `controls` is a list of ControlNet units, `{image: Blob, model, pre, weight, start, end}`.
    async generate(params = {}, { onProgress } = {}) {
      const id = this.nextId++;
      const message = { type: 'generate', id, params: { ...params } };
      const transfer = [];
      for (const key of ['init', 'mask']) {
        if (params[key] instanceof Blob) {
          const buffer = await params[key].arrayBuffer();
          message.params[key] = buffer;
          transfer.push(buffer);
        }
      }
      if (Array.isArray(params.controls)) {
        message.params.controls = await Promise.all(params.controls.map(async (unit) => {
          if (!(unit && unit.image instanceof Blob)) return unit;
          const buffer = await unit.image.arrayBuffer();
          transfer.push(buffer);
          return { ...unit, image: buffer };
        }));
      }
      return new Promise((resolve, reject) => {
        this.pending.set(id, { resolve, reject, onProgress });
        this.post(message, transfer);
      });
    }

    /// Stops the generation in progress (its promise rejects with code "cancelled").
    cancel() {
      this.post({ type: 'cancel' });
    }

    /// Removes the widget.
    unmount() {
      window.removeEventListener('message', this.onMessage);
      for (const job of this.pending.values()) job.reject(new DarkroomError('cancelled', 'the widget was removed'));
      this.pending.clear();
      this.iframe.remove();
    }
  }

  /// Mounts the widget in `element`; resolves once it is listening.
  function mount(element, { model, theme, base = defaultBase, timeoutMs = 30000 } = {}) {
    if (!base) return Promise.reject(new DarkroomError('unavailable', 'Darkroom.mount needs { base } when embed.js is inlined'));
    // The widget's own page (embed.html, beside the app): the only one other sites may frame.
    const url = new URL(base);
    url.pathname = url.pathname.replace(/[^/]*$/, '') + 'embed.html';
    url.searchParams.set('embed', String(VERSION));
    if (model) url.searchParams.set('model', model);
    if (theme) url.searchParams.set('theme', theme);
    const iframe = document.createElement('iframe');
    iframe.src = url.href;
    iframe.title = 'Darkroom image generator';
    iframe.allow = 'storage-access';
    iframe.style.cssText = 'width:100%;height:100%;min-height:520px;border:0;border-radius:8px;';
    const widget = new Widget(iframe, url.origin);
    element.appendChild(iframe);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        clearInterval(hello);
        widget.unmount();
        reject(new DarkroomError('unavailable', 'the Darkroom widget did not start'));
      }, timeoutMs);
      // The widget announces itself when it starts; until then, keep saying hello (a hello that
      // arrives before the widget listens is lost).
      const hello = setInterval(() => widget.post({ type: 'hello' }), 250);
      widget.addEventListener('ready', () => { clearTimeout(timer); clearInterval(hello); resolve(widget); }, { once: true });
    });
  }

  window.Darkroom = { mount, DarkroomError, version: VERSION };
})();

// The host side of www/embed-example.html: mount the widget, ask it for an image, show it.
const ready = Darkroom.mount(document.getElementById('darkroom'), { model: 'sd-turbo' });
document.getElementById('go').addEventListener('click', async () => {
  const dr = await ready;
  try {
    const { png, parameters } = await dr.generate({ prompt: document.getElementById('prompt').value });
    const out = document.getElementById('out');
    out.src = URL.createObjectURL(png);
    out.title = parameters;
  } catch (e) {
    document.getElementById('out').alt = `${e.code}: ${e.message}`;
  }
});

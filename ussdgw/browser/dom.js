// What both web pages (the self-care cabinet and the simulator's web phone) build their DOM with.
// Plain ES module, no build step: each page's server answers it at /static/dom.js, next to the
// page's own script, which imports it as "./dom.js".

// `el("p", {class: "note", onclick: f, dataset: {id: 1}}, "text", child, [more])`: an element with
// its attributes (`class`, `dataset`, `on<event>` listeners; `true` is a bare attribute; `false`,
// null and undefined leave it out) and its children (nodes, or text; nested arrays flattened;
// false, null and undefined skipped).
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

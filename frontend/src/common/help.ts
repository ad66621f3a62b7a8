// The "?" overlay listing a page's keyboard shortcuts (Esc or ? closes it).

export type Shortcut = [keys: string, what: string];

export function helpInstall(target: HTMLElement, title: string, shortcuts: Shortcut[]): { toggle: () => void; isOpen: () => boolean } {
  const card = document.createElement("div");
  card.className = "help-card";
  const h = document.createElement("h2");
  h.textContent = title;
  const list = document.createElement("dl");
  for (const [keys, what] of shortcuts) {
    const dt = document.createElement("dt");
    for (const key of keys.split(" ")) {
      const kbd = document.createElement("kbd");
      kbd.textContent = key;
      dt.append(kbd, " ");
    }
    const dd = document.createElement("dd");
    dd.textContent = what;
    list.append(dt, dd);
  }
  const close = document.createElement("button");
  close.type = "button";
  close.textContent = "Close";
  card.append(h, list, close);
  target.replaceChildren(card);
  const toggle = (): void => {
    target.hidden = !target.hidden;
  };
  close.addEventListener("click", toggle);
  target.addEventListener("click", (e) => {
    if (e.target === target) toggle();
  });
  return { toggle, isOpen: () => !target.hidden };
}

/** Whether a key event belongs to a text field (shortcuts must not fire while typing). */
export function typing(event: KeyboardEvent): boolean {
  const t = event.target;
  return t instanceof HTMLInputElement && t.type !== "checkbox" && t.type !== "range"
    || t instanceof HTMLTextAreaElement
    || t instanceof HTMLSelectElement;
}

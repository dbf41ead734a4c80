/** The link to Python: the one way to send, the one request in flight, the liveness ping,
 *  the zoom debounce, and the user values an echo must not undo. Owns every timer it starts. */
import { current, type Model, panelKey, replyKey, stateKey, type ViewState } from "./state";

/** After this long without any reply to a change, the view says the kernel may be gone. */
export const NO_REPLY_MS = 5000;
/** A request whose metrics reply never comes (lost, failed) stops blocking the next after this. */
export const REPLY_WAIT_MS = 3000;
/** Zoom and pan ask for a full-resolution window once the pointer has rested this long. */
export const VIEWPORT_DEBOUNCE_MS = 120;

type Timer = ReturnType<typeof setTimeout>;

export interface Link {
  /** Set a trait as the user did: kept until the next save, so that an echo cannot undo it. */
  setLocal<K extends keyof ViewState>(name: K, value: ViewState[K]): void;
  /** Put back an unsent user value that an echo overwrote; true when it did. */
  keepUnsent(name: string): boolean;
  /** Send every local change, then a ping (`ping = false`: the change's own reply will say the
   *  kernel is alive). */
  save(ping?: boolean): void;
  /** Send the state and wait for its metrics; while one request waits, only the latest next one is kept. */
  request(): void;
  /** Called with each metrics reply: releases the request it answers. */
  replied(view: Record<string, unknown> | undefined): void;
  /** Called with each picture (panel): releases a request that changed the picture, once its
   *  picture is here. A large map's metrics follow later; the sliders need not wait for them. */
  repliedPicture(view: Parameters<typeof panelKey>[0] | undefined): void;
  /** The kernel's custom messages (pong). */
  onCustom(msg: { type?: string; seq?: number }): void;
  /** Ask for the zoomed window `want` ([] for none) once zooming rests. */
  requestViewport(want: () => number[] | null): void;
  /** Tell Python that a display of the view appeared (true) or went (false): a view that no
   *  display shows lets go of its record (attnwidget/_lifetime.py). */
  display(shown: boolean): void;
  /** Stop every timer. */
  dispose(): void;
}

/** Requests: one in flight at a time (until its metrics reply or REPLY_WAIT_MS), the latest state wins. */
function requestQueue(model: Model, save: (ping?: boolean) => void, alive: () => void):
  Pick<Link, "request" | "replied" | "repliedPicture" | "dispose"> {
  let waiting: string | null = null;
  let waitingPicture: string | null = null; // the picture the request asks for, when it changes it
  let pending = false;
  let waitTimer: Timer | undefined;
  const release = (answered: boolean) => {
    if (answered) alive();
    waiting = null;
    clearTimeout(waitTimer);
    if (pending) {
      pending = false;
      request();
    }
  };
  const request = () => {
    if (waiting !== null) {
      pending = true;
      return;
    }
    const want = stateKey(current(model));
    const picture = panelKey(current(model));
    if (want === replyKey(model.get("metrics").view)) { // Python already shows this state:
      save(); // no reply will come, so a ping asks whether the kernel is there
      return;
    }
    // no ping: the reply says the kernel is alive, and a ping's round trip (two more kernel
    // busy/idle turns for the page to show) measurably slowed the reply on two cores
    save(false);
    waiting = want;
    const shown = model.get("panel")?.view;
    waitingPicture = shown && panelKey(shown) === picture ? null : picture;
    waitTimer = setTimeout(() => release(false), REPLY_WAIT_MS); // a lost or failed reply must not block the sliders
  };
  return {
    request,
    replied(view) {
      if (waiting !== null && replyKey(view) === waiting) release(true);
    },
    repliedPicture(view) {
      if (view && waiting !== null && waitingPicture === panelKey(view)) release(true);
    },
    dispose: () => clearTimeout(waitTimer),
  };
}

/** `offline(true)` when the kernel has not answered for NO_REPLY_MS, `offline(false)` when it does. */
export function createLink(model: Model, offline: (gone: boolean) => void): Link {
  // ---- liveness: every change sent gets an answer, either its own reply (a request) or a
  // pong to the ping that follows it, which Python sends after it has handled the change. A
  // restarted or shut-down kernel never answers (ipywidgets does not mark the view), so after
  // NO_REPLY_MS the view says it may be a snapshot.
  let pingSeq = 0;
  let noReplyTimer: Timer | undefined;
  const armNoReply = () => {
    noReplyTimer = setTimeout(() => offline(true), NO_REPLY_MS);
  };
  // Values the user set while a request was in flight wait here until the next save. The
  // kernel echoes every change it receives (echo_update), and ipywidgets applies the echo of
  // the last value *sent* over any newer value set locally but not yet sent; without this, a
  // move made while Python was busy could be undone by the echo of the move before it.
  const unsent = new Map<keyof ViewState, unknown>();
  const save = (ping = true) => {
    if (!noReplyTimer) armNoReply(); // first: sending to a dead kernel may throw
    unsent.clear();
    model.save_changes();
    if (ping) {
      pingSeq += 1;
      model.send({ type: "ping", seq: pingSeq });
    }
  };
  const alive = () => {
    clearTimeout(noReplyTimer);
    noReplyTimer = undefined;
    offline(false);
  };

  const queue = requestQueue(model, save, alive);
  let zoomTimer: Timer | undefined;
  return {
    setLocal(name, value) {
      unsent.set(name, value);
      model.set(name, value);
    },
    keepUnsent(name) {
      const key = name as keyof ViewState;
      if (!unsent.has(key)) return false;
      const mine = unsent.get(key) as ViewState[typeof key];
      if (JSON.stringify(model.get(key)) === JSON.stringify(mine)) return false;
      model.set(key, mine);
      return true;
    },
    save,
    request: queue.request,
    replied: queue.replied,
    repliedPicture: queue.repliedPicture,
    onCustom(msg) {
      if (msg?.type !== "pong") return;
      clearTimeout(noReplyTimer);
      noReplyTimer = undefined;
      offline(false);
      if ((msg.seq ?? 0) < pingSeq) armNoReply(); // alive, but the latest change is still pending
    },
    requestViewport(want) {
      clearTimeout(zoomTimer);
      zoomTimer = setTimeout(() => {
        const vp = want();
        if (vp === null || JSON.stringify(vp) === JSON.stringify(model.get("viewport"))) return;
        model.set("viewport", vp);
        save();
      }, VIEWPORT_DEBOUNCE_MS);
    },
    display(shown) {
      try {
        model.send({ type: shown ? "shown" : "hidden" });
      } catch {
        // the kernel is gone: nothing holds a record any more
      }
    },
    dispose() {
      queue.dispose();
      clearTimeout(zoomTimer);
      clearTimeout(noReplyTimer);
    },
  };
}

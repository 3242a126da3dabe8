// Talking to the pose API: where it is (config.json), the two calls, and one plain-words
// explanation for every way a call can fail.

const REQUEST_TIMEOUT_MS = 40_000; // API Gateway gives up after 29 s; a cold start fits well inside

/** A failure to show the person: a short title, a sentence on what to do, and a kind for tests. */
export class ProblemError extends Error {
  constructor(kind, title, detail) {
    super(`${title} ${detail}`.trim());
    this.kind = kind;
    this.title = title;
    this.detail = detail;
  }
}

// Connections the page's Content-Security-Policy blocked; fetch only says "Failed to fetch".
const blockedByPolicy = [];
document.addEventListener("securitypolicyviolation", (event) => {
  if (event.effectiveDirective === "connect-src") blockedByPolicy.push(event.blockedURI);
});

/**
 * Where the API is and how to call it, from config.json next to the page:
 * apiBaseUrl ("" = this page's own origin) and apiKey (sent as x-api-key when the API needs one).
 */
export async function loadConfig() {
  const sameOrigin = { apiBaseUrl: "", apiKey: "" };
  let response;
  try {
    response = await fetch("config.json", { cache: "no-store" });
  } catch {
    return sameOrigin;
  }
  if (response.status === 404) return sameOrigin;
  if (!response.ok) {
    throw new ProblemError("config", "The page's settings could not be loaded.",
      `config.json answered HTTP ${response.status}. Reload the page in a moment.`);
  }
  let config;
  try {
    config = await response.json();
  } catch {
    throw new ProblemError("config", "The page's settings are broken.", "config.json is not valid JSON.");
  }
  const base = typeof config?.apiBaseUrl === "string" ? config.apiBaseUrl.trim() : "";
  if (base && !/^https?:\/\/[^/]+/i.test(base)) {
    throw new ProblemError("config", "The page's settings are broken.",
      `config.json's apiBaseUrl must be empty or an http(s) URL, not "${base}".`);
  }
  const key = config?.apiKey ?? "";
  if (typeof key !== "string" || !/^[\x21-\x7e]*$/.test(key)) {
    throw new ProblemError("config", "The page's settings are broken.",
      "config.json's apiKey must be a string of printable characters without spaces.");
  }
  return { apiBaseUrl: base, apiKey: key };
}

/** The URL of one API route: relative to the page when the base is empty. */
export function endpoint(base, route) {
  const root = base ? (base.endsWith("/") ? base : `${base}/`) : document.baseURI;
  return new URL(route, root).href;
}

/** GET /health: the service status and the model card (joints, sides, skeleton, threshold). */
export async function health(api) {
  const url = endpoint(api.apiBaseUrl, "health");
  const body = await call(url, { method: "GET", headers: keyHeader(api) });
  if (!body || typeof body.model !== "object") {
    throw new ProblemError("server", "The API answered, but not as expected.", `${url} did not return the service status.`);
  }
  return body;
}

/** POST /pose with a JPEG data URL; the reply (every person) without the server-drawn image (the page draws its own). */
export async function estimatePose(api, dataUrl, threshold) {
  const url = endpoint(api.apiBaseUrl, "pose");
  const body = await call(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...keyHeader(api) },
    body: JSON.stringify({ image: dataUrl, threshold, return_image: false }),
  });
  // An older one-person API has no `people`; when there are, each needs its joints.
  const people = body?.people;
  if (!body || !Array.isArray(body.joints) || !Array.isArray(body.skeleton)
      || (people !== undefined && !(Array.isArray(people) && people.every((person) => Array.isArray(person?.joints))))) {
    throw new ProblemError("server", "The API answered, but not with a pose.", "Try again; if it keeps happening, the API may be misconfigured.");
  }
  return body;
}

/** The API key header, when config.json gives a key (an API deployed with RequireApiKey=true). */
function keyHeader(api) {
  return api.apiKey ? { "X-Api-Key": api.apiKey } : {};
}

async function call(url, init) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
  let response;
  let text;
  try {
    response = await fetch(url, { ...init, mode: "cors", credentials: "omit", cache: "no-store", signal: controller.signal });
    text = await response.text();
  } catch {
    if (controller.signal.aborted) {
      throw new ProblemError("timeout", "The API took too long to answer.",
        `No reply from ${originOf(url)} within ${REQUEST_TIMEOUT_MS / 1000} s. Try again in a moment.`);
    }
    throw await explainNetworkFailure(url);
  } finally {
    clearTimeout(timer);
  }
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) throw explainHttpError(response.status, body);
  return body;
}

function originOf(url) {
  return new URL(url).origin;
}

const nextTask = () => new Promise((resolve) => setTimeout(resolve, 0));

/** fetch rejected: offline, blocked by this page's policy, blocked by CORS, or nobody answering. */
async function explainNetworkFailure(url) {
  const origin = originOf(url);
  if (navigator.onLine === false) {
    return new ProblemError("offline", "You seem to be offline.", "Connect to the internet and try again.");
  }
  await nextTask(); // the securitypolicyviolation event is dispatched after fetch rejects
  if (blockedByPolicy.some((blocked) => blocked && blocked !== "inline" && originOf(new URL(blocked, document.baseURI).href) === origin)) {
    return new ProblemError("csp", "This page is not allowed to contact the API.",
      `Its Content-Security-Policy does not list ${origin}. Publish the page with web/deploy.py, which adds the API's origin.`);
  }
  if (origin !== window.location.origin) {
    // An opaque (no-cors) request succeeds when the server answers, whatever its CORS headers say.
    try {
      await fetch(url, { method: "GET", mode: "no-cors", cache: "no-store", credentials: "omit" });
      return new ProblemError("cors", "The API refused this page (CORS).",
        `The API at ${origin} answered, but does not allow pages from ${window.location.origin} to read its replies. Set the API's allowed origin (AllowedOrigin) to ${window.location.origin}.`);
    } catch {
      // nobody answered: fall through
    }
  }
  return new ProblemError("unreachable", "The API is unreachable.",
    `Nothing answered at ${origin}. Check your connection and the apiBaseUrl in config.json, then try again.`);
}

/** An HTTP error status (with the API's {"error": {code, message}} body when there is one). */
export function explainHttpError(status, body) {
  const apiMessage = body?.error?.message || body?.message || "";
  const said = apiMessage ? ` The API said: “${apiMessage}”.` : "";
  const requestId = body?.error?.request_id ? ` (request ${body.error.request_id})` : "";
  switch (true) {
    case status === 413:
      return new ProblemError("too_large", "The photo is too large.", `The API accepts images up to 4.5 MB.${said}`);
    case status === 415:
      return new ProblemError("not_image", "That file is not an image the API can read.", `Choose a JPEG, PNG or WebP photo.${said}`);
    case status === 400 || status === 422:
      return new ProblemError("rejected", "The API rejected the request.", said.trim() || `HTTP ${status}.`);
    // API Gateway's answer to a missing or unknown key (an unknown route says "Missing Authentication Token").
    case status === 403 && apiMessage === "Forbidden":
      return new ProblemError("api_key", "The API needs a valid key.",
        "It was deployed with RequireApiKey=true: put the key in config.json's apiKey (make deploy-web does).");
    case status === 429 && apiMessage === "Limit Exceeded":
      return new ProblemError("quota", "The API's daily quota is used up.", "Its usage plan allows no more requests today; try again tomorrow.");
    case status === 403 || status === 404:
      return new ProblemError("not_found", "The API address looks wrong.",
        `HTTP ${status}: there is no pose API at that address. Check the apiBaseUrl in config.json.${said}`);
    case status === 429:
      return new ProblemError("throttled", "Too many requests right now.", "The API is limiting traffic; wait a few seconds and try again.");
    case status === 502 || status === 503 || status === 504:
      return new ProblemError("server", "The API is unavailable or timed out.", `HTTP ${status}. Wait a moment and try again.${said}`);
    case status >= 500:
      return new ProblemError("server", "The server failed.", `HTTP ${status}${requestId}. Try again; if it keeps failing, report it.${said}`);
    default:
      return new ProblemError("http", "The API answered with an error.", `HTTP ${status}.${said}`);
  }
}

/** POST /track: the clip's next frames (JPEG data URLs) and the state of the previous reply (null at the
 * clip's start) -> per frame its people with `track_id` and `color`, and the state to send next. */
export async function trackFrames(api, frames, state, threshold) {
  const url = endpoint(api.apiBaseUrl, "track");
  const body = await call(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...keyHeader(api) },
    body: JSON.stringify({ frames, state, threshold }),
  });
  if (!body || !Array.isArray(body.frames) || body.frames.length !== frames.length || !Array.isArray(body.skeleton)
      || !body.frames.every((frame) => Array.isArray(frame?.people)) || typeof body.state !== "object") {
    throw new ProblemError("server", "The API answered, but not with tracks.", "Try again; if it keeps happening, the API may be an older one without POST /track.");
  }
  return body;
}

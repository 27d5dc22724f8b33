// The journey a React app walks, in plain browser JavaScript: from another origin (?api=…,
// through CORS) or from the dev server's own origin (through its proxy). The outcome goes to
// window.journeyResult for tests/test_browser.py.
const api = new URLSearchParams(location.search).get("api") ?? "";
const log = [];

async function call(method, path, { token, body } = {}) {
  const response = await fetch(api + path, {
    method,
    headers: {
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...(body === undefined ? {} : { "Content-Type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  log.push(`${method} ${path} ${response.status}`);
  return { status: response.status, body: text ? JSON.parse(text) : null, headers: response.headers };
}

async function journey() {
  const email = `browser-${Date.now()}-${Math.random().toString(36).slice(2)}@example.org`;
  const password = "correct horse battery";
  await call("POST", "/auth/register", { body: { email, password } });
  let tokens = (await call("POST", "/auth/login", { body: { email, password } })).body;
  await call("POST", "/profiles/me", { token: tokens.access_token, body: { height_cm: 165, weight_kg: 60 } });
  const start = new Date(Date.now() - 10 * 86400000).toISOString().slice(0, 10);
  await call("POST", "/periods/", { token: tokens.access_token, body: { start_date: start } });
  await call("POST", "/moods/", { token: tokens.access_token, body: { energy_level: 2 } });
  const current = await call("GET", "/predictions/current", { token: tokens.access_token });
  const forecast = await call("GET", "/predictions/forecast?days=7", { token: tokens.access_token });
  const moods = await call("GET", "/moods/", { token: tokens.access_token });
  await new Promise((resolve) => setTimeout(resolve, 3500)); // the access token expires
  let me = await call("GET", "/auth/me", { token: tokens.access_token });
  const expiredCode = me.body.code;
  const challenge = me.headers.get("WWW-Authenticate");
  if (me.status === 401 && expiredCode === "token_expired") { // refresh once, then retry
    tokens = (await call("POST", "/auth/refresh", { body: { refresh_token: tokens.refresh_token } })).body;
    me = await call("GET", "/auth/me", { token: tokens.access_token });
  }
  await call("POST", "/auth/logout", { body: { refresh_token: tokens.refresh_token } });
  const afterLogout = await call("GET", "/auth/me", { token: tokens.access_token });
  return {
    log,
    phase: current.body.phase,
    forecastDays: forecast.body.length,
    totalCount: moods.headers.get("X-Total-Count"),
    expiredCode,
    challenge,
    meAfterRefresh: me.status,
    afterLogout: afterLogout.status,
  };
}

journey().then(
  (result) => { window.journeyResult = result; },
  (error) => { window.journeyResult = { error: String(error), log }; },
);

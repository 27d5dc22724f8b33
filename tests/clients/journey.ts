// The journey a React app walks, typed by what openapi-typescript generates from
// /openapi.json with its default options (schema.d.ts beside this file, written by
// tests/test_clients.py). It sends only the fields a user must give: if the document made an
// optional field required (a `default` openapi-typescript takes as always present, say),
// `tsc --strict` refuses this file.
import type { paths } from "./schema";

type Body<P extends keyof paths, M extends "post" | "put"> = paths[P][M] extends {
  requestBody?: { content: { "application/json": infer B } };
}
  ? B
  : never;
type Ok<P extends keyof paths, M extends "get" | "post" | "put", S extends number> =
  paths[P][M] extends { responses: { [K in S]: { content: { "application/json": infer R } } } }
    ? R
    : never;

async function call<R>(base: string, method: string, path: string, token?: string, body?: unknown) {
  const response = await fetch(base + path, {
    method,
    headers: {
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...(body === undefined ? {} : { "Content-Type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status}`);
  return (response.status === 204 ? null : await response.json()) as R;
}

export async function journey(base: string, email: string): Promise<void> {
  const registration: Body<"/auth/register", "post"> = { email, password: "correct horse battery" };
  const user = await call<Ok<"/auth/register", "post", 201>>(base, "POST", "/auth/register", undefined, registration);
  const role: "user" | "admin" = user.role;
  const timeZone: string = user.time_zone;

  const credentials: Body<"/auth/login", "post"> = { email, password: "correct horse battery" };
  let tokens = await call<Ok<"/auth/login", "post", 200>>(base, "POST", "/auth/login", undefined, credentials);

  const profile: Body<"/profiles/me", "post"> = { height_cm: 165, weight_kg: 60 };
  const saved = await call<Ok<"/profiles/me", "post", 200>>(base, "POST", "/profiles/me", tokens.access_token, profile);
  const bmi: number = saved.bmi;

  const period: Body<"/periods/", "post"> = { start_date: "2026-11-01" };
  await call(base, "POST", "/periods/", tokens.access_token, period);
  const mood: Body<"/moods/", "post"> = { energy_level: 2 };
  const logged = await call<Ok<"/moods/", "post", 201>>(base, "POST", "/moods/", tokens.access_token, mood);
  const level: 0 | 1 | 2 = logged.energy_level;

  const prediction = await call<Ok<"/predictions/current", "get", 200>>(base, "GET", "/predictions/current", tokens.access_token);
  const range: [string, string] | null = prediction.cycle.next_period_range;
  const phase: "menstrual" | "follicular" | "ovulatory" | "luteal" | "late" | null = prediction.phase;
  const days = await call<Ok<"/predictions/forecast", "get", 200>>(base, "GET", "/predictions/forecast?days=7", tokens.access_token);
  const expected: 0 | 1 | 2 | undefined = days[0]?.energy.level;

  const refresh: Body<"/auth/refresh", "post"> = { refresh_token: tokens.refresh_token };
  tokens = await call<Ok<"/auth/refresh", "post", 200>>(base, "POST", "/auth/refresh", undefined, refresh);
  const logout: Body<"/auth/logout", "post"> = { refresh_token: tokens.refresh_token };
  await call(base, "POST", "/auth/logout", undefined, logout);
  console.log(JSON.stringify({ role, timeZone, bmi, level, range, phase, expected }));
}

import { createServer, type Server } from "node:http";

/** The greeting for `name`. */
export function greeting(name: string): string {
  return `hello, ${name}`;
}

/** GET /health and GET /greet/<name>, as JSON; anything else is a 404. */
export function route(path: string): { status: number; body: unknown } {
  if (path === "/health") {
    return { status: 200, body: { status: "ok" } };
  }
  const match = /^\/greet\/([^/]+)$/.exec(path);
  if (match) {
    return { status: 200, body: { message: greeting(decodeURIComponent(match[1])) } };
  }
  return { status: 404, body: { error: "not found" } };
}

/** The HTTP server, not yet listening. */
export function makeServer(): Server {
  return createServer((req, res) => {
    const { status, body } = route(req.url ?? "/");
    const text = JSON.stringify(body);
    res.writeHead(status, {
      "Content-Type": "application/json",
      "Content-Length": Buffer.byteLength(text),
    });
    res.end(text);
  });
}

import type { AddressInfo } from "node:net";
import { describe, expect, it } from "vitest";
import { greeting, makeServer, route } from "../src/app.js";

describe("greeter", () => {
  it("greets by name", () => {
    expect(greeting("ada")).toBe("hello, ada");
  });

  it("routes", () => {
    expect(route("/health")).toEqual({ status: 200, body: { status: "ok" } });
    expect(route("/greet/ada").body).toEqual({ message: "hello, ada" });
    expect(route("/nope").status).toBe(404);
  });

  it("serves over HTTP", async () => {
    const server = makeServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const res = await fetch(`http://127.0.0.1:${port}/health`);
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ status: "ok" });
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

import { makeServer } from "./app.js";

const port = Number(process.env.PORT ?? "3000");
makeServer().listen(port, "127.0.0.1");

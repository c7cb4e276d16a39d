// A scriptable @xmpp/client session for the end-to-end tests.
//
// Reads one JSON command per line on stdin and writes one JSON event per line on stdout:
//   {"op": "connect", "service": "ws://...", "domain": "...", "username": "...",
//    "password": "...", "resource": "..."}      -> {"event": "online", "jid": "..."}
//   {"op": "send", "xml": "<message .../>"}      sends one stanza
//   {"op": "drop"}                               closes the WebSocket without </close> (a lost
//                                                network); the library reconnects and resumes
//   {"op": "sm"}                                 -> {"event": "sm", "id", "enabled", "inbound"}
//   {"op": "stop"}                               closes the stream properly, then exits
// Every command is answered with {"event": "done", "op": ...} or {"event": "failed", ...}.
// Received stanzas come as {"event": "stanza", "name": ..., "xml": ...}.

import readline from "node:readline";
import { client } from "@xmpp/client";
import parse from "@xmpp/xml/lib/parse.js";

if (typeof WebSocket === "undefined") {
  process.stderr.write("this Node.js has no WebSocket: run it with --experimental-websocket\n");
  process.exit(3);
}

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
let xmpp = null;

async function run(cmd) {
  switch (cmd.op) {
    case "connect": {
      xmpp = client({
        service: cmd.service,
        domain: cmd.domain,
        username: cmd.username,
        password: cmd.password,
        resource: cmd.resource,
      });
      xmpp.streamManagement.timeout = 0; // no keep-alive disconnects during tests
      xmpp.reconnect.delay = 100;
      xmpp.on("error", (e) =>
        out({ event: "error", condition: e?.condition ?? "", message: String(e?.message ?? e) }),
      );
      xmpp.on("status", (status) => out({ event: "status", status }));
      xmpp.on("online", (jid) => out({ event: "online", jid: jid.toString() }));
      xmpp.on("offline", () => out({ event: "offline" }));
      xmpp.on("stanza", (st) => out({ event: "stanza", name: st.name, xml: st.toString() }));
      xmpp.streamManagement.on("resumed", () => out({ event: "resumed" }));
      await xmpp.start();
      return;
    }
    case "send":
      await xmpp.send(parse(cmd.xml));
      return;
    case "drop":
      xmpp.socket.socket.close();
      return;
    case "sm": {
      const sm = xmpp.streamManagement;
      out({ event: "sm", id: sm.id, enabled: sm.enabled, inbound: sm.inbound });
      return;
    }
    case "stop":
      try {
        await xmpp.stop();
      } finally {
        process.exit(0);
      }
      return;
    default:
      throw new Error(`unknown op ${cmd.op}`);
  }
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", async (line) => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  try {
    await run(cmd);
    out({ event: "done", op: cmd.op });
  } catch (e) {
    out({ event: "failed", op: cmd.op, condition: e?.condition ?? "", message: String(e?.message ?? e) });
  }
});
rl.on("close", () => process.exit(0));

// grant_mint.js -- mints a pgcdc grant (docs/protocol.md, Grants) with Node's crypto.
// usage: node grant_mint.js SECRET QUERY [FILTER...]   (valid for GRANT_TTL s, default 3600)
import { createHmac } from "node:crypto";

function mint(secret, query, filters = [], ttl = 3600) {
  let payload = `exp=${Math.floor(Date.now() / 1000) + ttl}&query=${encodeURIComponent(query)}`;
  for (const f of filters) payload += `&filter=${encodeURIComponent(f)}`;
  const mac = createHmac("sha1", secret).update(payload).digest("base64url");
  return Buffer.from(payload).toString("base64url") + "." + mac;
}

const [secret, query, ...filters] = process.argv.slice(2);
console.log(mint(secret, query, filters, Number(process.env.GRANT_TTL || 3600)));

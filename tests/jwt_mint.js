// jwt_mint.js -- mints a JWT for pgcdc with jsonwebtoken (npm install jsonwebtoken).
// usage: node jwt_mint.js HS256 SECRET      CLAIMS_JSON [TTL]
//        node jwt_mint.js RS256 PRIVATE.pem CLAIMS_JSON [TTL] [KID]
// exp is set to now + TTL seconds (default 3600) unless CLAIMS_JSON has one.
import { readFileSync } from "node:fs";
import jwt from "jsonwebtoken";

const [alg, secretOrFile, claimsJson, ttl = "3600", kid] = process.argv.slice(2);
const key = alg === "RS256" ? readFileSync(secretOrFile) : secretOrFile;
const claims = JSON.parse(claimsJson);
const options = { algorithm: alg };
if (claims.exp === undefined) options.expiresIn = Number(ttl);
if (kid) options.keyid = kid;
console.log(jwt.sign(claims, key, options));

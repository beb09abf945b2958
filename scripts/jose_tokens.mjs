// Make compact JWE/JWS tokens with node `jose` for scripts/gen_jwe_vectors.py: jobs on
// stdin as JSON [{kind: "jwe"|"jws", header, jwk, plaintext}], tokens on stdout.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import path from "node:path";

const dir = process.env.JOSE_DIR ?? "target/interop";
const require = createRequire(path.resolve(dir, "package.json"));
const jose = await import(require.resolve("jose"));

const jobs = JSON.parse(readFileSync(0, "utf8"));
const out = [];
for (const job of jobs) {
  const data = new TextEncoder().encode(job.plaintext);
  let token;
  if (job.kind === "jws") {
    const key = await jose.importJWK(job.jwk, job.header.alg);
    token = await new jose.CompactSign(data).setProtectedHeader(job.header).sign(key);
  } else {
    const key = await jose.importJWK(job.jwk, job.header.alg);
    token = await new jose.CompactEncrypt(data).setProtectedHeader(job.header).encrypt(key);
  }
  out.push({ header: job.header, plaintext: job.plaintext, token });
}
process.stdout.write(JSON.stringify(out));

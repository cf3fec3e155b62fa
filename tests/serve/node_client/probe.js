// A Node.js gRPC client that knows the server only through reflection, as grpcurl or
// Postman do: it lists the services, fetches their descriptors, builds stubs from them and
// calls both APIs. Usage: node probe.js HOST:PORT v1|v1alpha TEXT... ; prints one JSON object.
"use strict";
const grpc = require("@grpc/grpc-js");
const { GrpcReflection } = require("grpc-js-reflection-client");

const [address, version, ...texts] = process.argv.slice(2);
const insecure = grpc.credentials.createInsecure();
const options = { keepCase: true, enums: String, longs: String, defaults: true };

async function stubFor(reflection, service) {
  const packageObject = (await reflection.getDescriptorBySymbol(service)).getPackageObject(options);
  const Stub = service.split(".").reduce((scope, name) => scope[name], packageObject);
  return new Stub(address, insecure);
}

function call(stub, method, request) {
  const deadline = new Date(Date.now() + 10000);
  return new Promise((resolve, reject) =>
    stub[method](request, { deadline }, (error, reply) => (error ? reject(error) : resolve(reply))));
}

async function main() {
  const reflection = new GrpcReflection(address, insecure, {}, version);
  const out = { services: await reflection.listServices() };
  out.kserve_methods = (await reflection.listMethods("inference.GRPCInferenceService")).map((m) => m.name);

  const sentiment = await stubFor(reflection, "sentiment.v1.SentimentService");
  const batch = await call(sentiment, "PredictBatch", { texts });
  out.predict_batch = batch.predictions.map((p) => [p.label, p.probability]);

  const kserve = await stubFor(reflection, "inference.GRPCInferenceService");
  const reply = await call(kserve, "ModelInfer", {
    model_name: "imdb-lstm", id: "node-1",
    inputs: [{ name: "text", datatype: "BYTES", shape: [texts.length],
               contents: { bytes_contents: texts.map((t) => Buffer.from(t, "utf8")) } }],
  });
  out.model_infer = { id: reply.id, outputs: Object.fromEntries(reply.outputs.map((o) => [o.name,
    o.datatype === "FP32" ? o.contents.fp32_contents : o.contents.bytes_contents.map((b) => b.toString("utf8"))])) };
  try {
    await call(kserve, "ModelInfer", { model_name: "imdb-lstm", inputs: [] });
  } catch (error) {
    out.bad_request = { code: error.code, details: error.details };
  }
  return out;
}

main().then((out) => { process.stdout.write(JSON.stringify(out)); process.exit(0); },
            (error) => { process.stderr.write(String(error && error.stack || error)); process.exit(1); });

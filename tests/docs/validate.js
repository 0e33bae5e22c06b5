#!/usr/bin/env node
// validate.js - checks an OpenAPI 3.1 document (docs/openapi.json, or what
// GET /v1/openapi.json served) for tests/integration/test_docs.py.
//
// Usage: node tests/docs/validate.js FILE.json
// Prints "valid: ..." and exits 0, or prints every problem and exits 1.
//
// Two passes:
//   1. @apidevtools/swagger-parser: parses, resolves every $ref and validates
//      the document against the official OpenAPI 3.1 schema.
//   2. What that schema cannot see (swagger-parser checks no more for 3.x):
//      unique operationIds; each path template's {params} declared as
//      required path parameters and vice versa; every Schema Object compiles
//      under Ajv's JSON Schema 2020-12 in strict mode (so a misspelt keyword
//      such as "minimun" or a `required` name missing from `properties` is an
//      error, not silently ignored); and every schema's `examples` validate
//      against it.
"use strict";

const fs = require("fs");
const path = require("path");
const SwaggerParser = require("@apidevtools/swagger-parser");
const Ajv2020 = require("ajv/dist/2020");

const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

function fail(problems) {
  for (const p of problems) console.error(`invalid: ${p}`);
  process.exit(1);
}

// Rewrites "#/components/schemas/X" refs to the ids the schemas get in Ajv.
function rewriteRefs(node) {
  if (Array.isArray(node)) return node.map(rewriteRefs);
  if (node && typeof node === "object") {
    const out = {};
    for (const [k, v] of Object.entries(node)) {
      if (k === "$ref" && typeof v === "string" && v.startsWith("#/components/schemas/")) {
        out[k] = "urn:jobd:schema:" + v.slice("#/components/schemas/".length);
      } else {
        out[k] = rewriteRefs(v);
      }
    }
    return out;
  }
  return node;
}

// Calls fn(schema, where) for each Schema Object under a path item, an
// operation, or a component (parameters, headers, media types).
function eachInlineSchema(doc, fn) {
  const media = (content, where) => {
    for (const [type, m] of Object.entries(content || {})) if (m.schema) fn(m.schema, `${where}.content[${type}]`);
  };
  const params = (list, where) => {
    (list || []).forEach((p, i) => {
      if (p.schema) fn(p.schema, `${where}.parameters[${i}]`);
    });
  };
  const headers = (hs, where) => {
    for (const [name, h] of Object.entries(hs || {})) if (h.schema) fn(h.schema, `${where}.headers[${name}]`);
  };
  for (const [p, item] of Object.entries(doc.paths || {})) {
    params(item.parameters, p);
    for (const m of METHODS) {
      const op = item[m];
      if (!op) continue;
      const where = `${m.toUpperCase()} ${p}`;
      params(op.parameters, where);
      if (op.requestBody && op.requestBody.content) media(op.requestBody.content, `${where}.requestBody`);
      for (const [status, r] of Object.entries(op.responses || {})) {
        media(r.content, `${where}.responses[${status}]`);
        headers(r.headers, `${where}.responses[${status}]`);
      }
    }
  }
  const c = doc.components || {};
  for (const [name, p] of Object.entries(c.parameters || {})) if (p.schema) fn(p.schema, `components.parameters.${name}`);
  for (const [name, h] of Object.entries(c.headers || {})) if (h.schema) fn(h.schema, `components.headers.${name}`);
  for (const [name, r] of Object.entries(c.responses || {})) {
    media(r.content, `components.responses.${name}`);
    headers(r.headers, `components.responses.${name}`);
  }
}

function semanticChecks(doc) {
  const problems = [];

  // operationIds are unique; path parameters match the template.
  const ids = new Map();
  const resolveParam = (p) => {
    if (p && p.$ref) {
      const name = p.$ref.replace(/^#\/components\/parameters\//, "");
      return (doc.components.parameters || {})[name];
    }
    return p;
  };
  for (const [p, item] of Object.entries(doc.paths || {})) {
    const inTemplate = new Set([...p.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]));
    const shared = (item.parameters || []).map(resolveParam);
    for (const m of METHODS) {
      const op = item[m];
      if (!op) continue;
      const where = `${m.toUpperCase()} ${p}`;
      if (!op.operationId) problems.push(`${where}: no operationId`);
      else if (ids.has(op.operationId)) problems.push(`${where}: operationId ${op.operationId} also used by ${ids.get(op.operationId)}`);
      else ids.set(op.operationId, where);
      const all = [...shared, ...(op.parameters || []).map(resolveParam)];
      const declared = new Set(all.filter((x) => x && x.in === "path").map((x) => x.name));
      for (const name of inTemplate) if (!declared.has(name)) problems.push(`${where}: {${name}} is not a declared path parameter`);
      for (const x of all) {
        if (!x) { problems.push(`${where}: a parameter $ref does not resolve`); continue; }
        if (x.in === "path" && !inTemplate.has(x.name)) problems.push(`${where}: path parameter ${x.name} is not in the path`);
        if (x.in === "path" && x.required !== true) problems.push(`${where}: path parameter ${x.name} must be required`);
      }
      if (!op.responses || !Object.keys(op.responses).length) problems.push(`${where}: no responses`);
    }
  }

  // Every Schema Object compiles strictly under JSON Schema 2020-12.
  const ajv = new Ajv2020({
    strict: true, strictRequired: true, strictTypes: true, allowUnionTypes: true,
    validateFormats: false, allErrors: true,
  });
  // OpenAPI's own Schema Object keywords (3.1 §4.8.24), not JSON Schema's.
  ajv.addVocabulary(["discriminator", "xml", "externalDocs", "example"]);
  const schemas = (doc.components && doc.components.schemas) || {};
  for (const [name, s] of Object.entries(schemas)) {
    try {
      ajv.addSchema({ ...rewriteRefs(s), $id: `urn:jobd:schema:${name}` });
    } catch (e) {
      problems.push(`components.schemas.${name}: ${e.message}`);
    }
  }
  for (const name of Object.keys(schemas)) {
    let v;
    try {
      v = ajv.getSchema(`urn:jobd:schema:${name}`);
    } catch (e) {
      problems.push(`components.schemas.${name}: ${e.message}`);
      continue;
    }
    if (!v) continue;
    (schemas[name].examples || []).forEach((ex, i) => {
      if (!v(ex)) problems.push(`components.schemas.${name}.examples[${i}]: ${ajv.errorsText(v.errors)}`);
    });
  }
  eachInlineSchema(doc, (s, where) => {
    try {
      ajv.compile(rewriteRefs(s));
    } catch (e) {
      problems.push(`${where}: ${e.message}`);
    }
  });
  return problems;
}

async function main() {
  const file = process.argv[2];
  if (!file) {
    console.error("usage: node validate.js FILE.json");
    process.exit(2);
  }
  const text = fs.readFileSync(file, "utf8");
  let doc;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    fail([`${file} is not JSON: ${e.message}`]);
  }
  if (typeof doc.openapi !== "string" || !doc.openapi.startsWith("3.1.")) fail([`openapi is ${JSON.stringify(doc.openapi)}, not 3.1.x`]);
  try {
    // validate() dereferences its argument in place: give it a copy.
    await SwaggerParser.validate(JSON.parse(text));
  } catch (e) {
    fail([e.message]);
  }
  const problems = semanticChecks(doc);
  if (problems.length) fail(problems);
  const ops = Object.values(doc.paths).reduce((n, item) => n + METHODS.filter((m) => item[m]).length, 0);
  const version = require(path.join(__dirname, "node_modules/@apidevtools/swagger-parser/package.json")).version;
  console.log(`valid: ${doc.info.title} ${doc.info.version} (OpenAPI ${doc.openapi}), ${Object.keys(doc.paths).length} paths, ` +
              `${ops} operations (@apidevtools/swagger-parser ${version}, ajv ${require("ajv/package.json").version})`);
}

main().catch((e) => fail([e.stack || String(e)]));

// Send one raw message through the relay with nodemailer and print the outcome
// as one JSON document: { ok, response, error, log }. The options come as JSON
// on stdin: host, port, secure (implicit TLS), ca (PEM file), servername,
// auth (nodemailer's auth object), from, to (array), raw (the message, base64).
// The SMTP transcript is captured through nodemailer's logger, so a test can
// check the exchange as well as the result.
"use strict";

const fs = require("fs");
const util = require("util");
const nodemailer = require("nodemailer");

const opts = JSON.parse(fs.readFileSync(0, "utf8"));
const log = [];

function record(level) {
    return (entry, message, ...args) => {
        const tnx = entry && entry.tnx ? entry.tnx : level;
        log.push(tnx + ": " + util.format(message, ...args));
    };
}
const logger = {};
for (const level of ["trace", "debug", "info", "warn", "error", "fatal"]) {
    logger[level] = record(level);
}

const transport = nodemailer.createTransport({
    host: opts.host,
    port: opts.port,
    secure: !!opts.secure,
    requireTLS: !opts.secure,
    tls: { ca: [fs.readFileSync(opts.ca)], servername: opts.servername },
    auth: opts.auth,
    logger,
    debug: true,
    connectionTimeout: 10000,
    greetingTimeout: 10000,
    socketTimeout: 20000,
});

transport.sendMail(
    {
        envelope: { from: opts.from, to: opts.to },
        raw: Buffer.from(opts.raw, "base64"),
    },
    (err, info) => {
        const out = { ok: !err, log };
        if (err) {
            out.error = {
                code: err.code || null,
                command: err.command || null,
                response: err.response || null,
                responseCode: err.responseCode || null,
                message: String(err.message),
            };
        } else {
            out.response = info.response;
        }
        process.stdout.write(JSON.stringify(out) + "\n");
        transport.close();
    }
);

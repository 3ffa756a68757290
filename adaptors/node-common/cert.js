'use strict';
// The self-signed certificate of automatic mutual TLS (docs/protocol.md, section 4): a fresh
// ECDSA key, subject CN "localhost", SAN DNS "localhost", usable for server and client auth.
// node:crypto makes keys and signatures but not certificates, so the certificate's DER is
// written here: a fixed X.509 v3 template needs only a handful of ASN.1 encodings.

const crypto = require('node:crypto');

// --- DER, just what a certificate needs -------------------------------------------------------

function length(n) {
  if (n < 0x80) return Buffer.from([n]);
  const bytes = [];
  for (let rest = n; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest % 256);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function tlv(tag, ...contents) {
  const body = Buffer.concat(contents);
  return Buffer.concat([Buffer.from([tag]), length(body.length), body]);
}

const sequence = (...contents) => tlv(0x30, ...contents);
const set = (...contents) => tlv(0x31, ...contents);
const explicit = (number, content) => tlv(0xa0 + number, content);
const octetString = (bytes) => tlv(0x04, bytes);
const bitString = (bytes, unusedBits = 0) => tlv(0x03, Buffer.from([unusedBits]), bytes);
const boolean = (value) => tlv(0x01, Buffer.from([value ? 0xff : 0x00]));
const utf8String = (text) => tlv(0x0c, Buffer.from(text, 'utf8'));
const dnsName = (text) => tlv(0x82, Buffer.from(text, 'ascii')); // GeneralName [2] IA5String

/** A non-negative INTEGER from its big-endian magnitude. */
function unsignedInteger(magnitude) {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start += 1;
  const trimmed = magnitude.subarray(start);
  const padded = trimmed[0] & 0x80 ? Buffer.concat([Buffer.from([0]), trimmed]) : trimmed;
  return tlv(0x02, padded);
}

function objectIdentifier(dotted) {
  const [first, second, ...rest] = dotted.split('.').map(Number);
  const bytes = [40 * first + second];
  for (const arc of rest) {
    const encoded = [arc % 128];
    for (let high = Math.floor(arc / 128); high > 0; high = Math.floor(high / 128)) {
      encoded.unshift(0x80 | (high % 128));
    }
    bytes.push(...encoded);
  }
  return tlv(0x06, Buffer.from(bytes));
}

/** UTCTime until 2049, GeneralizedTime from 2050 (RFC 5280, section 4.1.2.5). */
function time(date) {
  const digits = `${date.toISOString().slice(0, 19).replace(/[-:T]/g, '')}Z`;
  return date.getUTCFullYear() < 2050
    ? tlv(0x17, Buffer.from(digits.slice(2), 'ascii'))
    : tlv(0x18, Buffer.from(digits, 'ascii'));
}

// --- The certificate --------------------------------------------------------------------------

/** Named curves we generate on, with the signature hash and algorithm that go with each. */
const CURVES = {
  'P-256': { nodeName: 'prime256v1', hash: 'sha256', signatureOid: '1.2.840.10045.4.3.2' },
  'P-384': { nodeName: 'secp384r1', hash: 'sha384', signatureOid: '1.2.840.10045.4.3.3' },
  'P-521': { nodeName: 'secp521r1', hash: 'sha512', signatureOid: '1.2.840.10045.4.3.4' },
};

const OID = {
  commonName: '2.5.4.3',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
};

function extension(oid, critical, value) {
  return sequence(objectIdentifier(oid), ...(critical ? [boolean(true)] : []), octetString(value));
}

/** Which of CURVES a PEM certificate's key is on, or null (not EC, or another curve). */
function curveOfCertificate(pem) {
  const key = new crypto.X509Certificate(pem).publicKey;
  if (key.asymmetricKeyType !== 'ec') return null;
  const { namedCurve } = key.asymmetricKeyDetails;
  return Object.keys(CURVES).find((curve) => CURVES[curve].nodeName === namedCurve) || null;
}

/**
 * A fresh self-signed certificate for "localhost" on `curve` ('P-521' unless told). It is its
 * own CA, like go-plugin's, so that a peer can trust exactly this certificate. Returns the
 * certificate as DER and PEM and the private key as PKCS#8 PEM.
 */
function selfSignedCertificate(curve = 'P-521', now = new Date()) {
  const { nodeName, hash, signatureOid } = CURVES[curve];
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: nodeName });
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const keyId = crypto.createHash('sha1').update(spki).digest();
  const name = sequence(set(sequence(objectIdentifier(OID.commonName), utf8String('localhost'))));
  const signatureAlgorithm = sequence(objectIdentifier(signatureOid));
  const serial = crypto.randomBytes(16);
  serial[0] &= 0x7f;
  // Key usage bits: digitalSignature (bit 0) and keyCertSign (bit 5); 2 unused bits.
  const keyUsage = bitString(Buffer.from([0x84]), 2);
  const tbs = sequence(
    explicit(0, unsignedInteger(Buffer.from([2]))), // version 3
    unsignedInteger(serial),
    signatureAlgorithm,
    name,
    sequence(
      time(new Date(now.getTime() - 30 * 1000)), // tolerate clocks slightly behind
      time(new Date(now.getTime() + 10 * 365 * 24 * 3600 * 1000)),
    ),
    name,
    spki,
    explicit(3, sequence(
      extension(OID.basicConstraints, true, sequence(boolean(true))),
      extension(OID.keyUsage, true, keyUsage),
      extension(OID.extKeyUsage, false, sequence(
        objectIdentifier(OID.serverAuth), objectIdentifier(OID.clientAuth),
      )),
      extension(OID.subjectAltName, false, sequence(dnsName('localhost'))),
      extension(OID.subjectKeyIdentifier, false, octetString(keyId)),
      extension(OID.authorityKeyIdentifier, false, sequence(tlv(0x80, keyId))),
    )),
  );
  const signature = crypto.sign(hash, tbs, privateKey); // DER ECDSA-Sig-Value
  const der = sequence(tbs, signatureAlgorithm, bitString(signature));
  const lines = der.toString('base64').match(/.{1,64}/g).join('\n');
  return {
    der,
    certPem: `-----BEGIN CERTIFICATE-----\n${lines}\n-----END CERTIFICATE-----\n`,
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }),
  };
}

module.exports = { CURVES, curveOfCertificate, selfSignedCertificate };

// An SMSC built on the npm `smpp` package (not this project's code), for the interoperability tests.
// It authenticates binds, answers submit_sm with a message id and a delivery receipt when one is
// asked for, and sends MOs (SMS or USSD) that the test writes to stdin as JSON lines. Everything it
// sees is printed to stdout as JSON lines.
'use strict';
const smpp = require('smpp');
const readline = require('readline');

const SYSTEM_ID = process.env.SMSC_SYSTEM_ID || 'ussdgw';
const PASSWORD = process.env.SMSC_PASSWORD || 'ussdgw1';
const out = (event) => process.stdout.write(JSON.stringify(event) + '\n');
const hex = (value) => (Buffer.isBuffer(value) ? value.toString('hex') : null);
let session = null;
let nextId = 1;

function message(pdu) {
  const sm = pdu.short_message;
  if (sm && typeof sm === 'object' && !Buffer.isBuffer(sm)) {
    return { text: typeof sm.message === 'string' ? sm.message : null, udh: sm.udh ? hex(Buffer.concat(sm.udh.map((u) => Buffer.from(u)))) : null };
  }
  return { text: typeof sm === 'string' ? sm : null, raw: hex(sm) };
}

const server = smpp.createServer((s) => {
  s.on('bind_transceiver', (pdu) => {
    s.pause();
    const ok = pdu.system_id === SYSTEM_ID && pdu.password === PASSWORD;
    s.send(pdu.response({ command_status: ok ? smpp.ESME_ROK : smpp.ESME_RBINDFAIL, system_id: 'node-smpp' }));
    out({ event: 'bind', system_id: pdu.system_id, ok });
    if (ok) session = s;
    s.resume();
  });
  s.on('submit_sm', (pdu) => {
    const messageId = 'node' + String(nextId++).padStart(6, '0');
    s.send(pdu.response({ message_id: messageId }));
    out({ event: 'submit_sm', message_id: messageId, source_addr: pdu.source_addr, destination_addr: pdu.destination_addr,
          data_coding: pdu.data_coding, esm_class: pdu.esm_class, registered_delivery: pdu.registered_delivery,
          service_type: pdu.service_type, ussd_service_op: pdu.ussd_service_op === undefined ? null : pdu.ussd_service_op,
          its_session_info: pdu.its_session_info === undefined ? null : pdu.its_session_info, ...message(pdu) });
    if (pdu.registered_delivery & 1) {
      const text = `id:${messageId} sub:001 dlvrd:001 submit date:2501010000 done date:2501010001 stat:DELIVRD err:000 text:`;
      s.deliver_sm({ source_addr: pdu.destination_addr, destination_addr: pdu.source_addr, esm_class: 4,
                     short_message: text, receipted_message_id: messageId, message_state: 2 },
                   (resp) => out({ event: 'receipt_resp', message_id: messageId, command_status: resp.command_status }));
    }
  });
  s.on('enquire_link', (pdu) => s.send(pdu.response()));
  s.on('unbind', (pdu) => { out({ event: 'unbind' }); s.send(pdu.response()); s.close(); });
  s.on('error', (err) => out({ event: 'error', error: String(err) }));
});

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  if (!session) { out({ event: 'error', error: 'no bound session' }); return; }
  const pdu = { source_addr_ton: 1, source_addr_npi: 1, source_addr: cmd.from, destination_addr: cmd.to,
                short_message: cmd.text, user_message_reference: cmd.ref };
  if (cmd.ussd_service_op !== undefined) {
    pdu.service_type = 'USSD';
    pdu.ussd_service_op = cmd.ussd_service_op;
  }
  session.deliver_sm(pdu, (resp) => out({ event: 'deliver_sm_resp', ref: cmd.ref, command_status: resp.command_status }));
});

server.listen(0, '127.0.0.1', () => out({ event: 'listening', port: server.address().port }));

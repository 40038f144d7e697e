// A js-libp2p node with @libp2p/kad-dht on /llamanet/kad/1.0.0: the second,
// independent Kademlia implementation that tests/test_kad_interop.py checks
// llamanet's DHT against.  TCP + Noise + Yamux on 127.0.0.1, DHT server mode,
// loopback addresses kept (passthroughMapper: the default drops private ones).
//
// Usage: node kad_peer.mjs [--store-llamanet]
//   --store-llamanet  accept values under /llamanet/ (any bytes: this peer only
//                     relays; llamanet checks signatures itself).  Without it the
//                     peer stores nothing of llamanet's, as a js node that does
//                     not know the namespace would.
//
// Commands arrive on stdin as JSON lines {"n": <number>, "op": ..., ...}; every
// answer is one JSON line {"n": <same number>, "ok": true|false, ...} on stdout,
// after a first line {"event": "started", "id": ..., "addrs": [...]}.
//   dial {addr}                 connect to a peer (multiaddr with /p2p/)
//   table {size, seconds}       wait until the routing table holds >= size peers
//   put {key, value_hex}        store a value; answers the peers that acknowledged
//                               and those that refused
//   get {key}                   the best value the walk found (value_hex), or ok=false
//   provide {cid}               announce ourselves as a provider of cid
//   providers {cid, seconds}    provider peer IDs found for cid
//   stop                        exit
import { createInterface } from 'node:readline'
import './node20.mjs'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { multiaddr } from '@multiformats/multiaddr'
import { CID } from 'multiformats/cid'
import { fromString, toString } from 'uint8arrays'

const storeLlamanet = process.argv.includes('--store-llamanet')
const validators = storeLlamanet ? { llamanet: async () => {} } : {}
const selectors = storeLlamanet ? { llamanet: () => 0 } : {}

const node = await createLibp2p({
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    ping: ping(),
    dht: kadDHT({
      protocol: '/llamanet/kad/1.0.0',
      clientMode: false,
      peerInfoMapper: passthroughMapper,
      validators,
      selectors
    })
  }
})
await node.start()
await node.services.dht.setMode('server')

const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const hex = (bytes) => toString(bytes, 'base16')
const keyBytes = (key) => fromString(key, 'utf8')
const withTimeout = (seconds) => AbortSignal.timeout(seconds * 1000)

async function put ({ key, value_hex: valueHex, seconds = 10 }) {
  const acked = new Set()
  const refused = new Set()
  for await (const event of node.services.dht.put(keyBytes(key), fromString(valueHex, 'base16'),
    { signal: withTimeout(seconds) })) {
    if (event.name === 'PEER_RESPONSE' && event.messageName === 'PUT_VALUE') acked.add(event.from.toString())
    if (event.name === 'QUERY_ERROR') refused.add(event.from.toString())
  }
  return { acked: [...acked], refused: [...refused].filter((p) => !acked.has(p)) }
}

async function get ({ key, seconds = 10 }) {
  let value = null
  for await (const event of node.services.dht.get(keyBytes(key), { signal: withTimeout(seconds) })) {
    if (event.name === 'VALUE') value = event.value
  }
  if (value == null) throw new Error('no value found')
  return { value_hex: hex(value) }
}

async function providers ({ cid, seconds = 10 }) {
  const found = new Set()
  for await (const event of node.services.dht.findProviders(CID.parse(cid), { signal: withTimeout(seconds) })) {
    if (event.name === 'PROVIDER') event.providers.forEach((p) => found.add(p.id.toString()))
  }
  return { providers: [...found] }
}

async function waitForTable ({ size, seconds = 10 }) {
  const until = Date.now() + seconds * 1000
  while (node.services.dht.routingTable.size < size) {
    if (Date.now() > until) throw new Error(`routing table holds ${node.services.dht.routingTable.size} peers`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return { size: node.services.dht.routingTable.size }
}

const ops = {
  dial: async ({ addr }) => { await node.dial(multiaddr(addr), { signal: withTimeout(10) }); return {} },
  table: waitForTable,
  put,
  get,
  provide: async ({ cid, seconds = 10 }) => {
    await node.contentRouting.provide(CID.parse(cid), { signal: withTimeout(seconds) })
    return {}
  },
  providers,
  stop: async () => { await node.stop(); process.exit(0) }
}

say({ event: 'started', id: node.peerId.toString(), addrs: node.getMultiaddrs().map(String) })
// Commands run one at a time, in order: the tests ask a question and wait for it.
const lines = createInterface({ input: process.stdin })
for await (const line of lines) {
  const command = JSON.parse(line)
  try {
    say({ n: command.n, ok: true, ...(await ops[command.op](command)) })
  } catch (err) {
    say({ n: command.n, ok: false, error: String(err?.message ?? err) })
  }
}
await node.stop()
process.exit(0)

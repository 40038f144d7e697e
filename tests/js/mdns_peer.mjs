// A js-libp2p node with @libp2p/mdns, the second, independent implementation of the
// libp2p mDNS spec that tests/test_lan.py checks llamanet against.  It listens on
// TCP, announces itself and prints one JSON line per event:
//   {"event":"started","id":...,"addrs":[...]}
//   {"event":"discovered","id":...,"addrs":[...]}
// Usage: node mdns_peer.mjs SERVICE_TAG SECONDS
import './node20.mjs'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { mdns } from '@libp2p/mdns'
import { identify } from '@libp2p/identify'

const [serviceTag, seconds] = [process.argv[2] ?? '_p2p._udp.local', Number(process.argv[3] ?? 20)]
const node = await createLibp2p({
  addresses: { listen: ['/ip4/0.0.0.0/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  peerDiscovery: [mdns({ serviceTag, interval: 1000 })],
  services: { identify: identify() }
})
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
node.addEventListener('peer:discovery', (evt) => {
  say({ event: 'discovered', id: evt.detail.id.toString(), addrs: evt.detail.multiaddrs.map(String) })
})
await node.start()
say({ event: 'started', id: node.peerId.toString(), addrs: node.getMultiaddrs().map(String) })
setTimeout(async () => { await node.stop(); process.exit(0) }, seconds * 1000)

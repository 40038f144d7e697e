// js-libp2p 3.x calls Promise.withResolvers (Node.js 22 and later) throughout;
// Debian's Node.js is 20.  Imported first by every peer script here.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

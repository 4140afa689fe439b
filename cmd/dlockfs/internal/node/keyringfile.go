package node

// keyringFileName is the keyring's file in --state-dir: with a --key-file,
// Serf rewrites it at every 'dlockfs keys' change, and at start it is the
// keyring when it exists, so a peer restarted after a rotation comes back
// with the cluster's current keys (see peer.Config.KeyringFile).
const keyringFileName = "keyring.json"

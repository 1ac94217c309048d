'use strict';
// Loads the native addon (src/, Rust), built by build.sh as
// hvsandbox.linux-x64-gnu.node beside package.json.

function loadNative() {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new Error(
      `hvsandbox runs on Linux x86-64 with KVM only (this is ${process.platform}-${process.arch})`,
    );
  }
  return require('../hvsandbox.linux-x64-gnu.node');
}

module.exports = loadNative();


// Compiles DemoToken.sol with solcjs (npm `solc`, pinned in the root package.json; nothing is
// downloaded) and writes DemoToken.json: the ABI and the creation bytecode the demo deploys.
//   node adaptors/ethereum/contracts/compile.mjs           write DemoToken.json
//   node adaptors/ethereum/contracts/compile.mjs --check   exit 1 if DemoToken.json is stale
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import solc from "solc";

const here = dirname(fileURLToPath(import.meta.url));
const source = readFileSync(join(here, "DemoToken.sol"), "utf8");
const input = {
  language: "Solidity",
  sources: { "DemoToken.sol": { content: source } },
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    // No metadata hash: the bytecode depends on the source and settings only.
    metadata: { bytecodeHash: "none" },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
if (errors.length) {
  for (const e of errors) console.error(e.formattedMessage);
  process.exit(1);
}
const contract = output.contracts["DemoToken.sol"].DemoToken;
const artifact = {
  compiler: `solc ${solc.version()}`,
  settings: input.settings,
  abi: contract.abi,
  bytecode: "0x" + contract.evm.bytecode.object,
};
const text = JSON.stringify(artifact, null, 2) + "\n";
const target = join(here, "DemoToken.json");
if (process.argv.includes("--check")) {
  let committed = "";
  try {
    committed = readFileSync(target, "utf8");
  } catch {}
  if (committed !== text) {
    console.error("adaptors/ethereum/contracts/DemoToken.json is stale: run node adaptors/ethereum/contracts/compile.mjs");
    process.exit(1);
  }
  console.log("DemoToken.json matches a fresh compile");
} else {
  writeFileSync(target, text);
  console.log(`wrote ${target}`);
}

#!/usr/bin/env bash
# Install the pinned AWS CDK CLI locally (node_modules/), idempotently.
#
# aws-cdk-lib 2.275 needs CLI aws-cdk@2.1148.1 (npm's `latest` tag points at an old 3.0.0 that
# refuses the assembly). Also installs Node 22 as a package when the system Node is older (jsii and
# the CLI warn on Node 20); `npx cdk` then runs with it through node_modules/.bin.
# Usage: scripts/setup_cdk.sh            (from anywhere; installs into the repository root)
set -euo pipefail
CDK_VERSION="2.1148.1"
NODE_PKG_VERSION="22"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

installed() {
  [ -f node_modules/aws-cdk/package.json ] && \
    node -e "process.exit(require('./node_modules/aws-cdk/package.json').version === '$CDK_VERSION' ? 0 : 1)"
}

if ! command -v npm >/dev/null 2>&1; then
  echo "setup_cdk: npm is required (Node.js >= 20)" >&2
  exit 1
fi
if [ ! -f package.json ]; then
  # A private package manifest so `npm install` installs here, not in a parent folder.
  printf '{\n  "name": "ocrloop-cdk",\n  "private": true,\n  "description": "Pinned AWS CDK CLI for ocrloop (scripts/setup_cdk.sh)"\n}\n' > package.json
fi
if installed; then
  echo "setup_cdk: aws-cdk@$CDK_VERSION already installed"
else
  npm install --no-audit --no-fund --save-exact --save-dev "aws-cdk@$CDK_VERSION"
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 22 ] && [ ! -x node_modules/node/bin/node ]; then
  npm install --no-audit --no-fund --save-exact --save-dev "node@$NODE_PKG_VERSION" || \
    echo "setup_cdk: could not install node@$NODE_PKG_VERSION; continuing with Node $node_major" >&2
fi
CDK_DISABLE_VERSION_CHECK=1 CDK_DISABLE_CLI_TELEMETRY=true npx --no-install cdk --version

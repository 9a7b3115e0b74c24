#!/bin/bash
# Deploy the HR app from the release branch. Run as alice.
set -euo pipefail

export GITHUB_TOKEN={{GITHUB_TOKEN}}
export GITLAB_TOKEN={{GITLAB_TOKEN}}

REPO=https://github.com/example-hr/hr-app.git
TARGET=/srv/app

cd "$TARGET"
git fetch --tags "https://x-access-token:${GITHUB_TOKEN}@github.com/example-hr/hr-app.git"
git checkout "${1:-main}"
./venv/bin/pip install -q -r requirements.txt
sudo /usr/bin/systemctl restart myapp
/opt/tools/notify.py "deployed $(git describe --tags) to $(hostname)"

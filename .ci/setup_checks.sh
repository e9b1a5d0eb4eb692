# Functions .ci/setup uses to decide and to verify; sourced, so tests can run each branch alone.

# Whether apt can install mesa-vulkan-drivers from bookworm-backports (Mesa 25). The policy is captured
# first, then matched: `apt-cache policy ... | grep -q` under pipefail fails every time (grep exits at the
# first match, apt-cache dies of SIGPIPE with status 141), which once made setup install Mesa 22 silently.
backports_mesa_available() {
  local policy
  policy="$(apt-cache policy mesa-vulkan-drivers)" || return 1
  [[ "$policy" == *bookworm-backports* ]]
}

# The end of setup: what the tests and the main job need must be there, or setup fails with the fix.
verify_setup() {
  if ! .venv/bin/lamp-bench doctor --setup; then
    echo "error: .ci/setup finished installing, but the checks above failed: follow each 'fix' and run it again" >&2
    return 1
  fi
}

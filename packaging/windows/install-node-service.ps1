# A peerfarm node as a Windows service, with NSSM (https://nssm.cc), which runs a console
# program as a service and restarts it when it fails (docs/admin-guide.md, "Windows").
# Written from NSSM's documentation; not run on Windows by the project's tests (they
# check that the peerfarm command below parses).
#
# Run in an elevated PowerShell, after:
#   py -m venv C:\peerfarm; C:\peerfarm\Scripts\pip install peerfarm
#   copying nssm.exe onto the PATH, and the farm key to C:\ProgramData\peerfarm\farm.key
# Settings: the [node] table of C:\ProgramData\peerfarm\config.toml (farm-key-file there).

$ErrorActionPreference = "Stop"
$service = "peerfarm-node"
$peerfarm = "C:\peerfarm\Scripts\peerfarm.exe"
$logs = "C:\ProgramData\peerfarm\logs"
New-Item -ItemType Directory -Force -Path $logs | Out-Null

nssm install $service $peerfarm node
nssm set $service DisplayName "peerfarm render node"
nssm set $service Description "peerfarm: renders chunks of the farm's jobs (docs/admin-guide.md)"
nssm set $service Start SERVICE_AUTO_START
# A dedicated, unprivileged account; its data folder is C:\ProgramData\peerfarm\node.
nssm set $service ObjectName "NT AUTHORITY\LocalService"
nssm set $service AppEnvironmentExtra PEERFARM_SERVICE=1
# A good neighbour on a shared desktop (renderers also run below normal priority).
nssm set $service AppPriority BELOW_NORMAL_PRIORITY_CLASS
# Restart after a crash, 5 s later.
nssm set $service AppExit Default Restart
nssm set $service AppRestartDelay 5000
# Stop: Ctrl+C first (the node finishes the chunks in flight), up to 5 minutes.
nssm set $service AppStopMethodConsole 300000
nssm set $service AppStderr "$logs\node.log"
nssm set $service AppRotateFiles 1
nssm set $service AppRotateBytes 10485760
nssm start $service

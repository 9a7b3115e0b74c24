# Maps the finance and scanner shares for the billing batch jobs (run at logon).
$ErrorActionPreference = "Stop"
$user = "CORP\svc_billing"
$pass = ConvertTo-SecureString "{{WIN_PS1_SECURESTRING}}" -AsPlainText -Force
$cred = New-Object System.Management.Automation.PSCredential($user, $pass)
New-PSDrive -Name F -PSProvider FileSystem -Root \\fs01.corp.internal\finance -Credential $cred -Persist

# The scanner share uses its own account; its password comes from the task's environment.
$scan = ConvertTo-SecureString $env:SCANNER_PASSWORD -AsPlainText -Force
net use S: \\fs01.corp.internal\scans /user:CORP\svc_scanner {{WIN_PS1_NETUSE}} /persistent:no

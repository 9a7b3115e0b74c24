@echo off
rem Deploys the billing web application to the web farm.
setlocal
cmdkey /add:web02.corp.internal /user:CORP\svc_deploy /pass:{{WIN_BAT_CMDKEY}}
net use \\web02.corp.internal\c$ {{WIN_BAT_NETUSE}} /user:CORP\svc_deploy
net use \\web03.corp.internal\c$ %DEPLOY_PASS% /user:CORP\svc_deploy
robocopy C:\build\billing \\web02.corp.internal\c$\inetpub\wwwroot /MIR /R:2
endlocal

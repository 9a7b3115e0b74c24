@echo off
rem KMS client activation against kms01 (public KMS client setup key, not a secret)
cscript //nologo %windir%\system32\slmgr.vbs /ipk VDYBN-27WPP-V4HQT-9VMD4-VMK7H
cscript //nologo %windir%\system32\slmgr.vbs /skms kms01.corp.internal:1688
cscript //nologo %windir%\system32\slmgr.vbs /ato

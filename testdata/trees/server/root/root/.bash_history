systemctl status myapp
journalctl -u myapp --since today
less /etc/myapp/app.conf
psql-hr -c 'select count(*) from employees'
cd /srv/app
git pull
systemctl restart myapp
df -h
ls -la /var/backups
exit
ssh -i /home/alice/.ssh/id_rsa deploy@app02.example.internal uptime

cd projects
git status
ssh db.internal
psql -h db.internal -U hr_app hr
scp dump.sql.gz backup@backup.example.internal:/srv/dumps/
git clone git@git.internal:hr/hr-app.git
exit

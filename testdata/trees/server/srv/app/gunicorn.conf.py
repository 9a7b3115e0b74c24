bind = "127.0.0.1:8000"
workers = 4
timeout = 60
accesslog = "/var/log/myapp/access.log"
errorlog = "/var/log/myapp/error.log"

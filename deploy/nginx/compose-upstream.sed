# Turns deploy/nginx/nginx.conf's loopback upstream (three replicas on
# 127.0.0.1:8001-8003) into the Docker Compose one: a single `app:8000`, which
# Docker's embedded DNS resolves to every replica of the `app` service when
# nginx starts. Used by the nginx service in deploy/docker-compose.prod.yml and
# checked by .ci/deploy_checks.sh.
s/server 127\.0\.0\.1:8001 /server app:8000 /
/server 127\.0\.0\.1:800[23] /d

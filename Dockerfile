# Slim, non-root image: sms-gateway --config /etc/sms-gateway/config.yaml --host 0.0.0.0
# Mount your own config over /etc/sms-gateway/config.yaml; keep the container port 8080 (the
# HEALTHCHECK probes it) and publish it as you like: docker run -p 9000:8080 ...
FROM python:3.11-slim AS build
WORKDIR /src
COPY setup.cfg pyproject.toml README.md constraints.txt ./
COPY gateway gateway
COPY providers providers
COPY web web
# Every dependency at the version CI tested (constraints.txt), built once into wheels.
RUN pip wheel --no-cache-dir --wheel-dir /wheels -c constraints.txt '.[speed]'

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --system --uid 10001 --create-home --home-dir /app sms
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
COPY config.yaml config.schema.json /etc/sms-gateway/
# In a container the log goes to stdout only (docker logs): no log file inside the image; the
# message store lives on a volume the non-root user owns (/etc/sms-gateway is read-only to it).
RUN sed -i -E 's#^(  file:) logs/gateway\.log( +)#\1 null            \2#; s#^(  url:) sqlite:///data/sms-gateway\.db#\1 sqlite:////var/lib/sms-gateway/sms-gateway.db#' \
      /etc/sms-gateway/config.yaml && grep -qE '^  file: null ' /etc/sms-gateway/config.yaml \
    && grep -q 'sqlite:////var/lib/sms-gateway/' /etc/sms-gateway/config.yaml \
    && mkdir -p /var/lib/sms-gateway && chown sms /var/lib/sms-gateway
VOLUME /var/lib/sms-gateway
WORKDIR /app
USER sms
EXPOSE 8080
# Secrets come from the environment (docker run -e / --env-file), never from the image.
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"
STOPSIGNAL SIGTERM
ENTRYPOINT ["sms-gateway"]
CMD ["--config", "/etc/sms-gateway/config.yaml", "--host", "0.0.0.0"]

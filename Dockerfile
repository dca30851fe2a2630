# One image for all ten services and the edge; docker-compose.yml picks one with SERVICE=<name>
# (or runs gateway/main.ts for the TypeScript edge). Node 24 runs the TypeScript sources directly.
FROM node:24-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm install --omit=dev --ignore-scripts --no-audit --no-fund
COPY gen ./gen
COPY kit ./kit
COPY services ./services
COPY gateway ./gateway
# Production deployments also set NODE_ENV=production, which makes every service refuse the
# development secrets: SERVICE_SECRET per service, and Auth's SERVICE_CREDENTIALS,
# AUTH_KEY_ENCRYPTION_KEY, User's USER_DATA_KEY (see docs/kit.md and the services' docs).
CMD ["sh", "-c", "exec node services/${SERVICE}/main.ts"]

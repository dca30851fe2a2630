# One image for all ten services; docker-compose.yml picks one with SERVICE=<name>.
FROM node:24-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm install --omit=dev --ignore-scripts --no-audit --no-fund
COPY gen ./gen
COPY services ./services
ENV NODE_ENV=production
# Type stripping: Node 24 runs the TypeScript sources directly.
CMD ["sh", "-c", "exec node services/${SERVICE}/main.ts"]

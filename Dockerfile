# syntax=docker/dockerfile:1
#
# Sigma Stream gateway image. Two stages: `build` compiles TypeScript with the
# dev dependencies, `runtime` holds only the production dependencies and dist/.
# test/deploy-dockerfile.test.ts replays these steps without a Docker engine, so
# keep to FROM, WORKDIR, ENV, COPY, RUN, USER, EXPOSE and CMD.
#
# Node 24 is the current LTS line (the AWS SDK drops Node 20 in 2027). The tag is
# pinned to an exact release so a rebuild does not change Node under us; bump it
# on purpose (and pin the digest too if your registry policy asks for it).

FROM node:24.21.0-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

FROM node:24.21.0-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# The cache mount keeps npm's download cache out of the image.
RUN --mount=type=cache,target=/root/.npm npm ci --omit=dev --no-audit --no-fund
COPY --from=build /app/dist ./dist
# uid 1000 is the image's `node` user. Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
# 3000: WebSocket lease endpoint and REST API. 3001: /metrics, /healthz, /readyz.
EXPOSE 3000 3001
# Exec form: node is PID 1 and receives SIGTERM itself (src/main.ts drains with
# 1012 and releases every lease). No npm wrapper: npm does not forward signals.
CMD ["node", "dist/main.js"]

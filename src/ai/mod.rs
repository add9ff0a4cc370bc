//! The AI Service Layer: the only code that talks to AI vendors.
//!
//! `provider` is the trait; `openai`, `anthropic` and `sandbox` implement it; `router`
//! runs fallback chains with retries, timeouts and circuit breakers; `pricing` turns
//! usage into cost; `cache` holds exact-match results; `accounting` writes every attempt
//! to `ai_calls` in batches, off the request path; `budget` reserves each call's
//! maximum cost against the spend limits before the vendor is called.

pub mod accounting;
pub mod anthropic;
pub mod budget;
pub mod cache;
pub mod client;
pub mod error;
pub mod num;
pub mod openai;
pub mod pricing;
pub mod provider;
pub mod responses;
pub mod router;
pub mod sandbox;
pub mod sandbox_server;
mod spans;
pub mod sse;
pub mod text_or_list;
pub mod types;

use std::sync::Arc;

use crate::config::{AiConfig, ProviderFormat};
use crate::store::DynStore;

pub use router::{AiRouter, CallContext, RouteError, Routed, RouterConfig};

/// Builds the router from configuration: the in-process sandbox always, OpenAI and
/// Anthropic when keyed (or given a base URL), and every extra provider named in
/// `AI_PROVIDERS`; vendor connections are pooled per lane (`lanes`, see [`client`]).
/// Returns the router, the writer that must be run to persist `ai_calls` and the
/// settler that must be run to settle budget reservations.
pub async fn build(
    cfg: &AiConfig,
    store: DynStore,
    lanes: usize,
) -> anyhow::Result<(Arc<AiRouter>, accounting::Writer, budget::Settler)> {
    let http = client::VendorClient::new(&cfg.vendor_proxy, lanes)?;
    let mut providers: Vec<Arc<dyn provider::Provider>> = vec![Arc::new(
        sandbox::SandboxProvider::new("sandbox", Arc::new(sandbox::SandboxEngine::default())),
    )];
    if !cfg.openai_api_key.is_empty() || cfg.openai_base_url_set {
        providers.push(Arc::new(openai::OpenAiProvider::new(
            "openai",
            &cfg.openai_base_url,
            cfg.openai_api_key.clone(),
            None,
            http.clone(),
        )));
    }
    if !cfg.anthropic_api_key.is_empty() || cfg.anthropic_base_url_set {
        providers.push(Arc::new(anthropic::AnthropicProvider::new(
            "anthropic",
            &cfg.anthropic_base_url,
            cfg.anthropic_api_key.clone(),
            http.clone(),
        )));
    }
    for p in &cfg.extra_providers {
        let provider: Arc<dyn provider::Provider> = match p.format {
            ProviderFormat::Openai => Arc::new(openai::OpenAiProvider::new(
                p.name.clone(),
                &p.base_url,
                p.api_key.clone(),
                p.api_version.clone(),
                http.clone(),
            )),
            ProviderFormat::Anthropic => Arc::new(anthropic::AnthropicProvider::new(
                p.name.clone(),
                &p.base_url,
                p.api_key.clone(),
                http.clone(),
            )),
        };
        providers.retain(|existing| existing.name() != p.name);
        providers.push(provider);
    }

    let result_cache: Option<Arc<dyn cache::ResultCache>> = if !cfg.cache_enabled {
        None
    } else if let Some(url) = &cfg.redis_url {
        match cache::RedisCache::connect(url.expose(), cfg.cache_ttl).await {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                tracing::warn!(error = %e, "Redis unreachable at start; the AI result cache stays in memory");
                Some(Arc::new(cache::MemoryCache::new(
                    cfg.cache_max_entries,
                    cfg.cache_ttl,
                )))
            }
        }
    } else {
        Some(Arc::new(cache::MemoryCache::new(
            cfg.cache_max_entries,
            cfg.cache_ttl,
        )))
    };

    let (budgets, settler) = budget::Budgets::new(
        store.clone(),
        cfg.budget_hold,
        cfg.budget_default_max_tokens,
    );
    let (writer, tx) = accounting::Writer::new(store);
    let router = AiRouter::new(
        providers,
        RouterConfig {
            attempt_timeout: cfg.timeout,
            retries: cfg.retries,
            base_delay: cfg.retry_delay,
            max_retry_after: cfg.max_retry_after,
            breaker_threshold: cfg.breaker_threshold,
            breaker_cooldown: cfg.breaker_cooldown,
        },
        pricing::PriceTable::with_overrides(cfg.prices.clone()),
        result_cache,
        Some(tx),
        cfg.aliases.clone(),
    )
    .with_budgets(budgets);
    tracing::info!(providers = ?router.provider_names(), "AI providers ready");
    Ok((Arc::new(router), writer, settler))
}

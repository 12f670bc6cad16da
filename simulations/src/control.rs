pub fn router() -> axum::Router<std::sync::Arc<crate::state::Shared>> { axum::Router::new() }

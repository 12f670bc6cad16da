pub struct Scenario;
pub struct ScenarioConfig;
